// Preflight: what would make a VM fail in the middle of a migration, found before the
// first pass, all at once, per VM and per disk.
//
// A replication pass copies each disk from a VM snapshot through Changed Block Tracking.
// Whatever a snapshot does not cover, or cannot be taken of, or whatever CBT cannot track,
// would fail a job half-way (or, worse, copy a disk that keeps changing underneath):
//   * independent disks (persistent or nonpersistent): a snapshot leaves them out;
//   * raw device mappings: physical mode cannot be snapshotted at all, virtual mode maps a
//     LUN that VDDK reads only through its mapping file;
//   * shared disks (multi-writer, or on a SCSI bus shared between VMs): another VM writes;
//   * encrypted VMs or disks; disks without a backing file name;
//   * VMs with snapshots of their own, or that need consolidation;
//   * VMs whose CBT cannot be enabled (hardware older than version 7, or not supported);
//   * templates, and VMs that are orphaned, inaccessible, invalid or disconnected.
// Each finding names the VM, the disk (if any), what is wrong and what to do.
//
// Snapshots named with MigrateKit's prefix are ours (a pass in progress, or a leftover
// that the next pass removes) and are not findings. Pure functions over a VmInfo.
#pragma once

#include <string>
#include <vector>

#include "vsphere/inventory.h"

namespace mk::vsphere {

struct Finding {
  std::string code;        // stable identifier: "independent-disk", "rdm-physical", ...
  std::string vm_name;
  std::string vm_id;       // instance UUID
  int disk_key = 0;        // 0 for a finding about the whole VM
  std::string disk_label;  // "Hard disk 2"
  std::string disk_file;   // "[ds1] web01/web01_1.vmdk"
  std::string problem;     // what is wrong
  std::string remedy;      // what to do about it
  // "VM web01 disk Hard disk 2 ([ds1] web01/web01_1.vmdk): <problem>; <remedy>"
  std::string text() const;
};

struct PreflightOptions {
  std::string snapshot_prefix = "migratekit-";  // snapshots so named are MigrateKit's own
  bool enable_cbt = true;  // false: a VM without CBT is a finding (it may not be enabled)
};

std::vector<Finding> preflight(const VmInfo& vm, const PreflightOptions& options = {});

// One line per finding, for an error message that refuses a pass.
std::string describe_findings(const std::vector<Finding>& findings);

}  // namespace mk::vsphere
