#include "vsphere/preflight.h"

#include <fmt/format.h>

namespace mk::vsphere {
namespace {

// "vmx-13" -> 13; 0 when the version cannot be read.
int hardware_version(const std::string& version) {
  if (!version.starts_with("vmx-")) return 0;
  try {
    return std::stoi(version.substr(4));
  } catch (const std::exception&) {
    return 0;
  }
}

class Checker {
 public:
  Checker(const VmInfo& vm, std::vector<Finding>& out) : vm_(vm), out_(out) {}

  void vm_finding(std::string code, std::string problem, std::string remedy) {
    out_.push_back({std::move(code), vm_.name, vm_.instance_uuid, 0, "", "", std::move(problem), std::move(remedy)});
  }
  void disk_finding(const DiskInfo& d, std::string code, std::string problem, std::string remedy) {
    out_.push_back({std::move(code), vm_.name, vm_.instance_uuid, d.key, d.label, d.file_name, std::move(problem),
                    std::move(remedy)});
  }

 private:
  const VmInfo& vm_;
  std::vector<Finding>& out_;
};

void check_state(const VmInfo& vm, Checker& c) {
  if (vm.is_template) {
    c.vm_finding("template", "it is a template, which cannot be powered on or snapshotted for replication",
                 "convert it to a virtual machine (Convert to Virtual Machine) or migrate a VM deployed from it");
  }
  const std::string& cs = vm.connection_state;
  if (cs == "orphaned") {
    c.vm_finding("orphaned", "vCenter lists it as orphaned: its host no longer knows it",
                 "remove it from the inventory and register its .vmx again, or pick the VM that replaced it");
  } else if (cs == "inaccessible" || cs == "invalid") {
    c.vm_finding(cs, fmt::format("vCenter lists it as {}: its configuration files cannot be read", cs),
                 "restore access to its datastore (or fix its .vmx) until vCenter shows it as connected");
  } else if (cs == "disconnected") {
    c.vm_finding("disconnected", "its host is disconnected from vCenter",
                 "reconnect the host in vCenter, then run the preflight again");
  }
  if (!vm.has_config && cs != "orphaned" && cs != "inaccessible" && cs != "invalid") {
    c.vm_finding("no-config", "vCenter returns no configuration for it (no instance UUID, no devices)",
                 "check that the vCenter account may read the VM's configuration (System.Read on it)");
  }
}

void check_vm(const VmInfo& vm, const PreflightOptions& o, Checker& c) {
  if (vm.encrypted) {
    c.vm_finding("encrypted-vm", "the VM is encrypted (VM encryption, config.keyId is set); VDDK cannot read it "
                                 "through a snapshot without the key",
                 "decrypt the VM (its storage policy without encryption), then run the preflight again");
  }
  int foreign = 0;
  std::string names;
  for (const auto& s : vm.snapshots) {
    if (s.name.starts_with(o.snapshot_prefix)) continue;
    names += (foreign++ ? ", \"" : "\"") + s.name + "\"";
  }
  if (foreign > 0) {
    c.vm_finding("existing-snapshots",
                 fmt::format("it has {} snapshot(s) of its own ({}); a pass's snapshot on top of them makes a "
                             "longer chain to consolidate and CBT areas relative to the wrong base",
                             foreign, names),
                 "delete or consolidate them (Snapshots > Delete All), then run the preflight again");
  }
  if (vm.consolidation_needed) {
    c.vm_finding("consolidation-needed", "vCenter says its disks need consolidation (a snapshot removal failed earlier)",
                 "run Snapshots > Consolidate on the VM, then run the preflight again");
  }
  int hw = hardware_version(vm.hardware_version);
  if (!vm.cbt_supported || (hw > 0 && hw < 7)) {
    c.vm_finding("cbt-unsupported",
                 fmt::format("Changed Block Tracking cannot be enabled on it (virtual hardware {}{})",
                             vm.hardware_version.empty() ? "unknown" : vm.hardware_version,
                             vm.cbt_supported ? ", older than vmx-07" : ", and vCenter reports CBT as unsupported"),
                 "upgrade its virtual hardware to version 7 or later (Compatibility > Upgrade VM Compatibility)");
  } else if (!vm.cbt_enabled && !o.enable_cbt) {
    c.vm_finding("cbt-disabled", "Changed Block Tracking is off and MigrateKit may not enable it",
                 "enable CBT on the VM (ctkEnabled = TRUE, then a snapshot created and removed) or allow the VMA "
                 "to enable it");
  }
}

void check_disk(const DiskInfo& d, Checker& c) {
  bool rdm = d.backing == "VirtualDiskRawDiskMappingVer1BackingInfo";
  if (rdm && d.compatibility_mode == "physicalMode") {
    c.disk_finding(d, "rdm-physical", "it is a physical-mode raw device mapping: vSphere cannot snapshot it",
                   "migrate the LUN's data another way (storage replication, or a copy inside the guest) and remove "
                   "the mapping from the VM, or convert it to a virtual disk (Storage vMotion to a VMFS datastore)");
  } else if (rdm) {
    c.disk_finding(d, "rdm-virtual", "it is a virtual-mode raw device mapping: its data lives on a LUN, not in a "
                                     "virtual disk that VDDK reads from a snapshot",
                   "convert it to a virtual disk (Storage vMotion with a disk format change), then run the preflight "
                   "again");
  } else if (d.disk_mode.starts_with("independent") || d.disk_mode == "nonpersistent" || d.disk_mode == "undoable" ||
             d.disk_mode == "append") {
    c.disk_finding(d, "independent-disk",
                   fmt::format("its mode is {}: a snapshot does not cover it, so no pass could read a consistent "
                               "copy of it",
                               d.disk_mode),
                   "set the disk's mode to Dependent (persistent) with the VM powered off, then run the preflight "
                   "again");
  }
  if (d.sharing == "sharingMultiWriter") {
    c.disk_finding(d, "shared-disk", "it is shared with multi-writer: another VM may write to it during the copy",
                   "migrate the cluster's shared disk another way, or remove multi-writer sharing when only this VM "
                   "uses it");
  } else if (!d.controller_sharing.empty() && d.controller_sharing != "noSharing") {
    c.disk_finding(d, "shared-disk",
                   fmt::format("it is on a SCSI controller with bus sharing ({}): other VMs may write to it",
                               d.controller_sharing),
                   "move the disk to a controller without bus sharing, or migrate the shared disk another way");
  }
  if (d.encrypted) {
    c.disk_finding(d, "encrypted-disk", "the disk is encrypted (its backing has a keyId)",
                   "decrypt the disk (a storage policy without encryption), then run the preflight again");
  }
  if (d.file_name.empty()) {
    c.disk_finding(d, "no-backing-file", "the disk has no backing file name, so VDDK has nothing to open",
                   "check the disk in vCenter (it may be a device VDDK cannot read); remove it or give it a virtual "
                   "disk file");
  }
}

}  // namespace

std::string Finding::text() const {
  std::string where = fmt::format("VM {}", vm_name.empty() ? vm_id : vm_name);
  if (disk_key != 0) {
    where += fmt::format(" disk {}", disk_label.empty() ? std::to_string(disk_key) : disk_label);
    if (!disk_file.empty()) where += fmt::format(" ({})", disk_file);
  }
  return fmt::format("{}: {}; {}", where, problem, remedy);
}

std::vector<Finding> preflight(const VmInfo& vm, const PreflightOptions& options) {
  std::vector<Finding> out;
  Checker c(vm, out);
  check_state(vm, c);
  check_vm(vm, options, c);
  for (const auto& d : vm.disks) check_disk(d, c);
  return out;
}

std::string describe_findings(const std::vector<Finding>& findings) {
  std::string out;
  for (const auto& f : findings) out += "\n  - " + f.text();
  return out;
}

}  // namespace mk::vsphere
