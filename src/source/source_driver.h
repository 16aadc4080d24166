// SourceDriver: what the VMA needs from a place VMs come from (VMware through vSphere and
// VDDK, or a qcow2 image with a dirty bitmap), in one interface.
//
//   auto pass = driver.open_pass(vm_id, stored_change_ids);
//   for (auto& d : pass->disks()) copy d.uri with d.request (the engine);
//   on success, for every disk: store d.change_id_to_store; pass->close(true);
//   on failure: pass->close(false) (or let the Pass go) and keep the old change IDs.
//
// Change IDs are kept per VM and per disk key by the caller; a driver only reads the
// stored ones and says which to store after a successful pass. A Pass owns what it set
// up (snapshot, NBD servers, bitmaps) and releases it in close(), which the destructor
// calls if the caller did not. Drivers and passes are not thread-safe: one owner each.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/plan.h"
#include "protocol/names.h"

namespace mk::source {

struct VmSummary {
  std::string id;    // the driver's stable identifier (vSphere instance UUID, image path)
  std::string name;
  std::string power_state;
};

using protocol::DiskKey;

struct DiskDescription {
  DiskKey key;             // identity of the disk within the VM; change IDs are stored by it
  std::string label;       // "[ds1] web01/web01.vmdk", "disk.qcow2"
  uint64_t capacity = 0;
  std::string change_id;   // current change ID, "" when change tracking is off
};

// Stored change IDs of one VM: disk key -> change ID of the last successful pass.
using ChangeIds = std::map<DiskKey, std::string>;

struct DiskPass {
  DiskKey key;
  std::string label;
  uint64_t capacity = 0;
  std::string uri;                 // NBD URI to read this disk from during the pass
  engine::PlanRequest request;     // the areas to copy (changed areas or dirty bitmap)
  bool full = false;               // a full pass (no usable stored change ID)
  std::string reason;              // why full or incremental, for logs and reports
  std::string change_id_to_store;  // store it for this disk once the pass succeeded
  // Where open_pass() spent this disk's time (seconds, steady clock): asking what changed
  // (QueryChangedDiskAreas, the dirty bitmaps) and starting its reader. The rest of
  // open_pass() is the point in time itself (finding the VM, preflight, snapshot).
  double change_query_seconds = 0, reader_start_seconds = 0;
};

class Pass {
 public:
  virtual ~Pass() = default;
  virtual const std::vector<DiskPass>& disks() const = 0;
  // Releases everything the pass set up. `succeeded`: every disk was copied and flushed
  // (drivers that rotate state, like dirty bitmaps, commit only then). Safe to call twice.
  virtual void close(bool succeeded) = 0;
  // The pass's point in time as the driver can find it again after a restart of its
  // owner (a snapshot's id), so that an interrupted pass resumes on the same data; ""
  // when the driver cannot resume a pass.
  virtual std::string snapshot_id() const { return ""; }
  // For a disk whose copy broke (its target went away for a while) and that resumes in
  // the same pass: throws SnapshotGone when the pass's point in time no longer exists
  // (the disk cannot resume on it), and restarts the disk's reader when `restart` (a
  // reader that no longer serves); returns the URI to read the disk from. Unlike the
  // rest of a Pass, safe to call from one thread per disk at once.
  virtual std::string resume_disk(const DiskKey& key, bool restart);
  // Seconds the pass spent on its snapshot: taking it (with CBT's activation, which takes
  // and removes one of its own) and reading its disks' layout; and, once closed, removing
  // it. Its Snapshot and SnapshotRemoval phases: what a pass without a snapshot (a
  // powered-off VM's, see vmware_source.h, such as a cutover's final pass) does not spend.
  // Finding the VM and starting or stopping readers, which every pass does, are not in
  // them. 0 for a pass without a snapshot.
  virtual double snapshot_seconds() const { return 0; }
  virtual double snapshot_removal_seconds() const { return 0; }
  // Throws PointInTimeLost when what the pass copied may no longer be one point in time
  // (a pass without a snapshot whose VM was powered on or whose disks were written
  // meanwhile). Called before a disk reports its change ID: a pass with a snapshot,
  // whose point in time cannot change, never throws.
  virtual void check_point_in_time() {}
};

// The snapshot of the pass to resume no longer exists (or, for a pass without a
// snapshot, the VM was powered on or its disks written): the pass must start over.
class SnapshotGone : public Error {
 public:
  using Error::Error;
};

// A pass without a snapshot whose VM was powered on or whose disks were written while it
// copied: what it copied is not one point in time, and no disk of it may be made final.
class PointInTimeLost : public Error {
 public:
  using Error::Error;
};

class SourceDriver {
 public:
  virtual ~SourceDriver() = default;
  virtual std::vector<VmSummary> list_vms() = 0;
  virtual std::vector<DiskDescription> describe_disks(const std::string& vm_id) = 0;
  // Prepares a pass: consistent point in time, per-disk reader and planned areas.
  virtual std::unique_ptr<Pass> open_pass(const std::string& vm_id, const ChangeIds& stored) = 0;
};

}  // namespace mk::source
