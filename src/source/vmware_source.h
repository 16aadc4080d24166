// VmwareSource: VMs of a vCenter or ESXi as a SourceDriver.
//
// A pass takes a snapshot of the VM (name "<prefix><UTC time>", no memory), asks
// QueryChangedDiskAreas per disk following the change-ID rules (change_ids.h; a change
// ID that vSphere rejects falls back to a full pass, with the reason), and starts one
// DiskReader per disk on that snapshot: nbdkit's vddk plugin, or the flat-file stand-in
// when `flat_file_for` is set (labs and tests). close() stops the readers and removes the
// snapshot (consolidating), whatever happened. open_pass() first removes leftover
// snapshots whose names start with the prefix: those of a run that crashed.
//
// VMs are identified by their vSphere instance UUID. CBT is enabled on a VM that lacks
// it (ReconfigVM, then a snapshot created and removed to activate it) unless
// `enable_cbt` is false, in which case the pass is refused. The driver shares the Session with its passes; not thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "source/disk_reader.h"
#include "source/source_driver.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"

namespace mk::source {

struct VmwareSourceOptions {
  bool enable_cbt = true;
  std::string snapshot_prefix = "migratekit-";
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

  // Removes this driver's leftover snapshots from the VM; returns how many.
  int remove_leftover_snapshots(const vsphere::VmInfo& vm);

 private:
  vsphere::VmInfo find(const std::string& vm_id);

  std::shared_ptr<vsphere::Session> session_;
  vsphere::ConnectOptions connect_;
  VmwareSourceOptions options_;
};

}  // namespace mk::source
