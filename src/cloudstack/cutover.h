// Cutover (live failover): moves a replicated VM from VMware into CloudStack.
//
// Steps, each recorded in the job's StepLog under these names:
//   final-pass         source shut down gracefully through the VMA (powered off after
//                      the timeout), the last incremental pass, change IDs committed
//   detach-from-oma    exports removed, volumes detached from the OMA
//   deploy-vm          deployVirtualMachine with startvm=false, named by names.h (the
//                      VMware name is the display name), the further NICs added
//   replace-root       template root volume detached and deleted, OS disk as device 0
//   attach-data-disks  in unit order
//   start-vm
// Any failure rolls back (step "rollback"): the new VM torn down (our volumes detached
// first, then destroyed with expunge), the volumes back on the OMA and re-exported, the
// source powered on again if it was running when the cutover began. Then a CutoverError names the
// failed step and carries CloudStack's (or the collaborator's) error.
//
// Cutover borrows everything it is given; they must outlive it. One run at a time.
#pragma once

#include <chrono>
#include <string>

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

struct CutoverOptions {
  std::chrono::milliseconds shutdown_timeout{std::chrono::minutes(5)};
  std::chrono::milliseconds power_poll{std::chrono::seconds(2)};
};

class Cutover {
 public:
  Cutover(const VmBuilder& builder, SourcePower& power, FinalPass& final_pass, Exports& exports,
          CutoverOptions options = {});

  // Returns the new CloudStack VM's id. Throws UsageError before any step if the VM
  // cannot be built (unmapped network, volume not ours, ...), CutoverError after a
  // rollback.
  std::string run(const SourceVm& vm, StepLog& steps);

 private:
  bool stop_source(const std::string& vm_uuid);  // true if this call powered it off
  void rollback(const SourceVm& vm, StepLog& steps, const std::string& vm_id,
                const std::vector<SourceDisk>& unexported, bool source_was_on);

  const VmBuilder& builder_;
  SourcePower& power_;
  FinalPass& final_pass_;
  Exports& exports_;
  CutoverOptions options_;
};

}  // namespace mk::cloudstack
