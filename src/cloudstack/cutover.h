// Cutover (live failover): moves a replicated VM from VMware into CloudStack.
//
// Steps, each recorded in the job's StepLog under these names:
//   final-pass         source shut down gracefully through the VMA (powered off after
//                      the timeout), the last incremental pass, change IDs committed
//   guest-conversion   (with a GuestConversion) the guest converted for KVM on the
//                      volumes while they are still on the OMA's VM; a failure leaves
//                      them as the final pass left them and rolls back like any step
//   detach-from-oma    exports removed, volumes detached from the OMA
//   deploy-vm          deployVirtualMachine with startvm=false, named by names.h (the
//                      VMware name is the display name), fitted to the guest (template,
//                      boot type and mode, OS type: guest_fit.h), the further NICs added
//   replace-root       template root volume detached and deleted, the root disk (the
//                      inspected boot disk) as device 0
//   attach-data-disks  in unit order
//   start-vm
// Any failure rolls back (step "rollback"): the new VM torn down (our volumes detached
// first, then destroyed with expunge), the volumes back on the OMA and re-exported, the
// source powered on again if it was running when the cutover began. Then a CutoverError names the
// failed step and carries CloudStack's (or the collaborator's) error.
// A deploy whose answer never arrived (a proxy's 504, a dropped connection) may have made
// the VM all the same: the rollback looks it up by the name the cutover gave it (chosen
// free just before) and removes it, so that it is neither leaked nor duplicated by a retry.
// A rollback goes on past each failure and does what it can; when something is left its
// step fails, and the CutoverError says "ROLLBACK INCOMPLETE" and names what is left (the
// CloudStack VM and the volumes on it, each volume not back on the OMA and where it is,
// a source still powered off) and what to do. The CutoverRecord the run filled lets
// finish_rollback() try again once the cause is fixed.
//
// Cutover borrows everything it is given; they must outlive it. One run at a time.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "cloudstack/steps.h"
#include "cloudstack/vm_builder.h"

namespace mk::cloudstack {

class CutoverError : public Error {
 public:
  CutoverError(std::string step, const std::string& message)
      : Error(message), step_(std::move(step)) {}
  const std::string& step() const { return step_; }  // the step that failed

 private:
  std::string step_;
};

// What a cutover changed so far, which its rollback undoes (the OMA keeps it while a
// rollback is incomplete, and writes it ahead while the cutover runs: see
// CutoverOptions::record_changed).
struct CutoverRecord {
  std::string vm_id;                    // the new VM, "" if none is known
  std::string lost_deploy;              // the name of a deploy whose answer was lost, else ""
  std::vector<std::string> unexported;  // disk keys whose export the cutover removed
  bool source_was_on = false;           // the source ran when the cutover began
  // The name of the deploy about to be sent or sent (its VM may exist although vm_id is
  // still ""): what an undo by someone else looks the VM up by, like lost_deploy.
  std::string deploying;
  // The volumes may no longer be what the final pass left: the guest conversion was
  // committing into them (or could not undo a failed commit). Replicating on from the
  // committed change IDs would mix those writes with the source's: the next pass must be
  // full. (A start that CloudStack's job failed ran no guest; a dead node's cutover that
  // had begun its start is left to the operator, see the OMA's README.)
  bool volumes_changed = false;
};

struct CutoverOptions {
  std::chrono::milliseconds shutdown_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds power_poll{std::chrono::seconds(2)};
  // Called with the record before each change it describes is made (the source's power
  // read, an export removed, a deploy sent) and after a deploy answered: written ahead,
  // so that whoever finds the cutover interrupted (another OMA node after this one died)
  // knows what to undo. An exception it throws fails the step (and rolls back).
  std::function<void(const CutoverRecord&)> record_changed;
};

class Cutover {
 public:
  // `conversion` (may be null: no conversion) is borrowed too.
  Cutover(const VmBuilder& builder, SourcePower& power, FinalPass& final_pass, Exports& exports,
          CutoverOptions options = {}, GuestConversion* conversion = nullptr);

  // Returns the new CloudStack VM's id. Throws UsageError before any step if the VM
  // cannot be built (unmapped network, volume not ours, ...), CutoverError after a
  // rollback.
  std::string run(const SourceVm& vm, StepLog& steps);
  // The same, filling `record` as it goes: after a CutoverError whose rollback was
  // incomplete it says what is left for finish_rollback() (the caller keeps it).
  std::string run(const SourceVm& vm, StepLog& steps, CutoverRecord& record);

  // The rollback of an earlier run again (step "rollback"), from its record: what is
  // already undone is skipped. Throws CutoverError (step "rollback") if it is still
  // incomplete, saying what is left.
  void finish_rollback(const SourceVm& vm, const CutoverRecord& record, StepLog& steps);

 private:
  bool stop_source(const std::string& vm_uuid);  // true if this call powered it off
  // "" when everything is undone; else what is left and what to do (the step's detail).
  std::string rollback(const SourceVm& vm, const CutoverRecord& record, StepLog& steps);
  std::string volumes_on(const SourceVm& vm, const std::string& vm_id) const;
  std::string whereabouts(const SourceDisk& disk) const;

  const VmBuilder& builder_;
  SourcePower& power_;
  FinalPass& final_pass_;
  Exports& exports_;
  CutoverOptions options_;
  GuestConversion* conversion_;
};

}  // namespace mk::cloudstack
