// Test failover: boots a copy of a replicated VM in CloudStack on a test network while
// the source keeps running in VMware, and throws the copy away afterwards.
//
// start(), steps recorded under these names:
//   detach-from-oma    exports removed, volumes detached from the OMA
//   snapshot-volumes   createSnapshot of every volume (the state replication reached),
//                      taken once detached: KVM refuses snapshots of volumes attached to
//                      a running VM (the OMA) unless kvm.snapshot.enabled, off by default
//   guest-conversion   (with a GuestConversion) the volumes attached to the OMA's VM
//                      again, the guest converted on them, detached again: after the
//                      snapshots, so that the cleanup's revert undoes the conversion too
//                      and replication continues from the unconverted state
//   deploy-vm          "<host name>-test-<UTC timestamp>" (63 characters at most), one NIC
//                      on the test network (CloudStack allows one NIC per network)
//   replace-root, attach-data-disks, start-vm   as in a cutover
// A failure rolls back as cleanup() does and throws a CutoverError naming the step.
//
// cleanup(), steps:
//   destroy-test-vm    stopped, our volumes detached, destroyed (with expunge when the
//                      account may; otherwise the step's detail says it was not expunged);
//                      with no VM id recorded (a deploy whose answer never arrived), the
//                      VM is looked up by the test VM's name, which is this run's alone
//   revert-snapshots   every volume back to its snapshot: the test's writes are gone
//   delete-snapshots
//   return-to-oma      volumes attached to the OMA again and re-exported, so the next
//                      incremental pass continues from the change IDs it had
// cleanup() can be run again after a partial failure: what is already gone is skipped.
//
// The source VM is never touched. The OMA must not run a replication pass of the VM
// between start() and cleanup() (its volumes are not on the OMA).
// TestFailover borrows its collaborators; they must outlive it. One run at a time.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cloudstack/cutover.h"

namespace mk::cloudstack {

// What start() made, which cleanup() needs (the OMA stores it with the job).
struct TestFailoverRecord {
  std::string vm_id;                              // "" if none was deployed
  std::string vm_name;
  std::map<std::string, std::string> snapshots;  // volume id -> snapshot id
  std::vector<std::string> unexported;           // disk keys whose export start() removed
  bool conversion_began = false;                 // the guest-conversion step ran (volumes may be written)
};

class TestFailover {
 public:
  // `conversion` (may be null: no conversion) is borrowed.
  TestFailover(const Client& client, const VmBuilder& builder, Exports& exports,
               std::string test_network_id, GuestConversion* conversion = nullptr);

  TestFailoverRecord start(const SourceVm& vm, StepLog& steps);
  // The same, filling `record` as it goes: after a CutoverError whose rollback was
  // incomplete it says what is left for cleanup() (the caller keeps it).
  void start(const SourceVm& vm, StepLog& steps, TestFailoverRecord& record);
  void cleanup(const SourceVm& vm, const TestFailoverRecord& record, StepLog& steps);
  // The cleanup's steps in CloudStack only (steps "takeover-destroy-test-vm",
  // "takeover-revert-snapshots", "takeover-delete-snapshots"): the volumes are left
  // detached (or where they were) for whoever takes them over (another OMA node, after
  // the one that ran start() died: it attaches them to itself). Throws Error if a part
  // failed; can be run again.
  void undo_in_cloud(const SourceVm& vm, const TestFailoverRecord& record, StepLog& steps);

  // Called with the record before each change it describes is made (an export removed,
  // a snapshot asked for, a deploy sent) and after it answered: written ahead, so that
  // whoever finds start() interrupted knows what to undo. Set before start().
  void on_record_change(std::function<void(const TestFailoverRecord&)> f) { record_changed_ = std::move(f); }

 private:
  enum class Undo { Rollback, Cleanup, CloudOnly };
  void undo(const SourceVm& vm, const TestFailoverRecord& record, StepLog& steps, Undo how);
  void changed(const TestFailoverRecord& r) {
    if (record_changed_) record_changed_(r);
  }
  std::function<void(const TestFailoverRecord&)> record_changed_;

  const Client& client_;
  const VmBuilder& builder_;
  Exports& exports_;
  std::string test_network_id_;
  GuestConversion* conversion_;
};

}  // namespace mk::cloudstack
