// Operations on one VM: snapshots, Changed Block Tracking and power.
//
// Snapshots: create (without memory, optionally quiesced) and remove (consolidating the
// disks), and find existing ones by name so that leftovers of a crashed run can be
// removed. CBT: enable/disable (ReconfigVM) and QueryChangedDiskAreas, paged by
// startOffset over the whole disk. Power: PowerOn, PowerOff, and ShutdownGuest with a
// timeout and PowerOff as the fallback.
//
// Stateless functions; thread-safe as the Session is. Failures throw mk::Error naming
// the VM and the operation; a fault from QueryChangedDiskAreas is a SoapFault so that a
// caller can tell a rejected change ID (FileFault) from other failures.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/range.h"
#include "vsphere/inventory.h"
#include "vsphere/tasks.h"

namespace mk::vsphere {

Moref create_snapshot(Session& s, const VmInfo& vm, const std::string& name, const std::string& description,
                      bool quiesce = false, const TaskWait& wait = {});
// Removes one snapshot (not its children) and consolidates the disks.
void remove_snapshot(Session& s, const VmInfo& vm, const Moref& snapshot, const TaskWait& wait = {});
// All snapshots of the VM, depth first.
std::vector<SnapshotRef> list_snapshots(Session& s, const Moref& vm);

// The VM's disks as the snapshot saw them (their changeIds are the ones to store).
std::vector<DiskInfo> snapshot_disks(Session& s, const Moref& snapshot);

void set_change_tracking(Session& s, const VmInfo& vm, bool enabled, const TaskWait& wait = {});

// Changed areas of disk `device_key` in `snapshot` since `change_id` ("*" for all
// allocated areas), over [0, capacity). An empty `snapshot` leaves the argument unset:
// vSphere then answers for the VM's current disks, which only works for a VM that is
// powered off (a fault otherwise). Pages through the answers by startOffset and
// checks them: areas outside the disk or an answer that does not advance throw.
RangeList query_changed_disk_areas(Session& s, const Moref& vm, const Moref& snapshot, int device_key,
                                           uint64_t capacity, const std::string& change_id);

void power_on(Session& s, const VmInfo& vm, const TaskWait& wait = {});
void power_off(Session& s, const VmInfo& vm, const TaskWait& wait = {});
std::string power_state(Session& s, const Moref& vm);
// Asks the guest to shut down; if it is not off within `timeout` (or the guest cannot be
// asked: no VMware Tools), powers the VM off. Returns true if the guest shut down itself.
bool shutdown_guest(Session& s, const VmInfo& vm, std::chrono::seconds timeout,
                    std::chrono::milliseconds poll = std::chrono::milliseconds(500));

}  // namespace mk::vsphere
