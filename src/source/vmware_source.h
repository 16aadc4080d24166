// VmwareSource: VMs of a vCenter or ESXi as a SourceDriver.
//
// A pass first runs the preflight (vsphere/preflight.h) and refuses a VM with findings
// before anything changes on it. It then takes a snapshot of the VM (name
// "<prefix><UTC time>", no memory, the owner in its description), asks
// QueryChangedDiskAreas per disk following the change-ID rules (change_ids.h), and
// starts one DiskReader per disk on that snapshot: nbdkit's vddk plugin, or the
// flat-file stand-in when `flat_file_for` is set (labs and tests). close() stops the
// readers and removes the snapshot (consolidating), whatever happened.
//
// QueryChangedDiskAreas: any fault other than NotAuthenticated (FileFault and its kin,
// InvalidArgument, a CBT reset, a datastore that cannot answer) makes that disk a full
// pass with the fault as the reason, so that a change ID vSphere keeps refusing never
// fails the job for ever. A full pass of a disk that already holds an earlier pass
// copies the whole disk without asking for "*" (its answer would be discarded), and so
// does a disk without a stored change ID when `targets_may_hold_data`.
//
// Without a snapshot: a VM that is powered off with CBT active on every disk (the
// cutover's final pass: the source is off by then) needs no snapshot, and a snapshot
// costs seconds of the cutover's downtime to take and remove. Such a pass reads the
// VM's own disks (its config's VirtualDisk backings: fileName and changeId), asks
// QueryChangedDiskAreas with the snapshot argument unset (vSphere then answers for the
// VM's current disks, which it allows for a powered-off VM only), opens each disk with
// VDDK without snapshot= (or its flat file in labs), and stores each disk's current
// changeId. It holds only while the VM stays off and unwritten, so before a disk reports
// its change ID (Pass::check_point_in_time(): PointInTimeLost) and before anything
// resumes it (resume_pass(), resume_disk(): SnapshotGone, the pass starts over) the VM
// must still be powered off and every disk's changeId the one the pass started with.
// Its snapshot_id() is kNoSnapshot followed by those changeIds (see there). A VM that is
// on (or suspended), or whose CBT must first be activated, gets a snapshot as before.
//
// Resume: resume_pass() opens the pass of an interrupted run (the VMA was killed) again
// on that run's snapshot, planned as the first run was, so that each disk continues
// from its checkpoint; it throws SnapshotGone when the VM no longer has that snapshot.
//
// Leftovers: open_pass() removes the VM's snapshots of a run of this owner that crashed
// (name with the prefix and this owner in the description), never another owner's: a
// second VMA, or the CLI, may be in the middle of its own pass on the same vCenter.
//
// VMs are identified by their vSphere instance UUID. CBT is enabled on a VM that lacks
// it (ReconfigVM, then a snapshot created and removed to activate it) unless
// `enable_cbt` is false, in which case the pass is refused. The driver shares the Session with its passes; not thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "source/disk_reader.h"
#include "source/source_driver.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"

namespace mk::source {

// How Pass::snapshot_id() names a pass without a snapshot: this prefix, then the JSON
// object {"<disk key>": "<changeId at the start of the pass>", ...}. Stored with the job
// and its checkpoints like a snapshot's moref, so that a resume can tell whether the
// VM's disks are still those the pass started on. Not a moref: no snapshot has it.
inline constexpr std::string_view kNoSnapshot = "no-snapshot:powered-off:";

struct VmwareSourceOptions {
  bool enable_cbt = true;
  std::string snapshot_prefix = "migratekit-";
  // Who takes the snapshots (a VMA's id, "cli-<host>"): letters, digits, - _ . : only.
  // "" = "host-<this machine's host name>".
  std::string owner;
  // The targets of disks without a stored change ID may hold an earlier copy (the VMA
  // cannot tell a fresh volume from a reused one): such a disk's full pass covers the
  // whole disk, so that areas no longer allocated at the source are zeroed, and "*" is
  // not asked for (its answer would be discarded). false: a first pass copies the
  // allocated areas ("*") onto a target known to be fresh.
  bool targets_may_hold_data = false;
  std::string work_dir;      // existing private directory for reader sockets
  VddkParams vddk;           // libdir, transports, nbdkit, read_rate (server, user, ... are filled in)
  // Labs and tests: where the flat file of a disk is; when set, disks are served from it
  // by nbdkit's file plugin instead of VDDK.
  std::function<std::string(const vsphere::DiskInfo&)> flat_file_for;
};

class VmwareSource : public SourceDriver {
 public:
  // `session` is logged in; `connect` is what it was opened with (VDDK needs the server,
  // user, password file and thumbprint too).
  VmwareSource(std::shared_ptr<vsphere::Session> session, vsphere::ConnectOptions connect, VmwareSourceOptions options);

  std::vector<VmSummary> list_vms() override;
  std::vector<DiskDescription> describe_disks(const std::string& vm_id) override;
  std::unique_ptr<Pass> open_pass(const std::string& vm_id, const ChangeIds& stored) override;
  // The pass whose snapshot is `snapshot` (Pass::snapshot_id() of the interrupted run),
  // opened again with the same stored change IDs. Throws SnapshotGone (for a pass
  // without a snapshot: the VM is no longer off or its disks changed).
  std::unique_ptr<Pass> resume_pass(const std::string& vm_id, const std::string& snapshot, const ChangeIds& stored);

  // Removes this owner's leftover snapshots from the VM (as described), except those
  // in `keep` (snapshots of passes that will resume); returns how many.
  int remove_leftover_snapshots(const vsphere::VmInfo& vm, const std::set<std::string>& keep = {});
  // The same on every VM of the inventory, found in one query; `lock_vm(instance uuid)`
  // is held around each VM's removal. A VM that fails is reported in `errors` and the
  // others go on. Returns how many snapshots were removed.
  int remove_all_leftover_snapshots(const std::function<std::unique_lock<std::mutex>(const std::string&)>& lock_vm,
                                    std::vector<std::string>& errors, const std::set<std::string>& keep = {});

  // Whether `snapshot` was taken by this owner (prefix and owner marker).
  bool is_ours(const vsphere::SnapshotRef& snapshot) const;
  const std::string& owner() const { return options_.owner; }

 private:
  vsphere::VmInfo find(const std::string& vm_id);
  // The pass on `snap` (empty: the VM's own disks, without a snapshot): per disk its
  // planned areas and a reader. `taking_seconds`: what taking `snap` took (0 when the pass
  // resumes on it), for Pass::snapshot_seconds().
  std::unique_ptr<Pass> start_pass(const vsphere::VmInfo& vm, const vsphere::Moref& snap, const ChangeIds& stored,
                                   double taking_seconds = 0);
  // What starts `disk`'s reader (VDDK, or the lab's flat file) for the pass on `snap`;
  // kept by the pass to start it again when a disk resumes.
  std::function<std::unique_ptr<DiskReader>()> reader_for(const vsphere::VmInfo& vm, const vsphere::Moref& snap,
                                                          const vsphere::DiskInfo& disk) const;
  // Fills d.request, d.full and d.reason for one disk of the pass (see the top comment).
  void plan_areas(const vsphere::VmInfo& vm, const vsphere::Moref& snap, const vsphere::DiskInfo& disk,
                  const std::optional<std::string>& stored, DiskPass& d);

  std::shared_ptr<vsphere::Session> session_;
  vsphere::ConnectOptions connect_;
  VmwareSourceOptions options_;
};

}  // namespace mk::source
