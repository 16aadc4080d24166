// Inventory: finding VMs and describing them (hardware, disks, NICs) through the
// PropertyCollector, a ContainerView over the whole inventory, and the SearchIndex.
//
// Everything here is a plain value built from one or a few property-collector calls;
// functions use the Session they are given (which is thread-safe) and keep no state.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "vsphere/session.h"

namespace mk::vsphere {

struct DiskInfo {
  int key = 0;               // device key: the identity of a disk within its VM (CBT, change IDs)
  std::string label;         // deviceInfo.label: "Hard disk 1"
  int unit_number = -1;
  int controller_key = 0;
  std::string controller;    // "VirtualLsiLogicController", ...
  int bus_number = -1;       // the controller's bus
  uint64_t capacity_bytes = 0;  // capacityInBytes, or capacityInKB x 1024 when absent
  std::string file_name;     // "[datastore1] vm/vm.vmdk"
  std::string datastore;     // "datastore1" (from the file name)
  Moref datastore_ref;
  bool thin = false;
  std::string change_id;     // backing.changeId, "" when CBT is not active
  // What a snapshot can and cannot cover (preflight.h):
  std::string backing;       // backing xsi:type: "VirtualDiskFlatVer2BackingInfo", "VirtualDiskRawDiskMappingVer1BackingInfo", ...
  std::string disk_mode;     // backing.diskMode: "persistent", "independent_persistent", ...
  std::string sharing;       // backing.sharing: "sharingNone", "sharingMultiWriter" ("" when unset)
  std::string compatibility_mode;  // RDM only: "physicalMode" or "virtualMode"
  bool encrypted = false;    // backing.keyId is set (VM encryption)
  std::string controller_sharing;  // the controller's sharedBus: "noSharing", "virtualSharing", "physicalSharing"
};

struct NicInfo {
  int key = 0;
  std::string mac;
  std::string network;       // network or distributed port group name
  Moref network_ref;         // the distributed port group, when the NIC is on one
  std::string adapter;       // "VirtualVmxnet3", ...
};

// A snapshot in a VM's snapshot tree.
struct SnapshotRef {
  Moref ref;
  std::string name;
  std::string description;
};

struct VmInfo {
  Moref ref;
  std::string name;
  std::string bios_uuid;      // config.uuid
  std::string instance_uuid;  // config.instanceUuid
  std::string power_state;    // poweredOn, poweredOff, suspended
  std::string guest_id, guest_full_name;
  int cpus = 0;
  int memory_mb = 0;
  std::string firmware;       // bios, efi
  bool secure_boot = false;   // config.bootOptions.efiSecureBootEnabled (vSphere 6.5+)
  bool cbt_enabled = false;   // config.changeTrackingEnabled
  bool is_template = false;
  std::string connection_state;  // runtime.connectionState: connected, disconnected, orphaned, inaccessible, invalid
  bool consolidation_needed = false;  // runtime.consolidationNeeded
  bool encrypted = false;             // config.keyId is set
  bool cbt_supported = true;          // capability.changeTrackingSupported (absent: assumed)
  std::string hardware_version;       // config.version: "vmx-13"
  bool has_config = false;            // config is readable (an orphaned or inaccessible VM may have none)
  std::vector<int> boot_order_disks;  // config.bootOptions.bootOrder: the disks' keys, in order
  std::vector<SnapshotRef> snapshots; // the snapshot tree, depth first
  std::vector<DiskInfo> disks;
  std::vector<NicInfo> nics;
};

// One object's properties as returned by the property collector: name -> <val> node.
struct ObjectProperties {
  Moref ref;
  std::vector<std::pair<std::string, xml::Node>> props;
  xml::Node get(const std::string& name) const;
};

// Retrieves `paths` of one object. `keep` holds the answer the nodes point into.
ObjectProperties retrieve(Session& s, const Moref& obj, const std::vector<std::string>& paths,
                          std::vector<xml::Document>& keep);

// Every VM (templates included, marked) with its hardware, through a ContainerView.
std::vector<VmInfo> list_vms(Session& s);
VmInfo describe_vm(Session& s, const Moref& vm);
// The datacenter of every VM: VM moref value -> datacenter name.
std::map<std::string, std::string> vm_datacenters(Session& s);
// The name of the datacenter that holds `obj`, found by following its parents (a VM in
// a vApp through parentVApp); "" when none does (an orphaned object).
std::string datacenter_of(Session& s, const Moref& obj);

// SearchIndex lookups; std::nullopt when nothing matches.
std::optional<Moref> find_vm_by_bios_uuid(Session& s, const std::string& uuid);
std::optional<Moref> find_vm_by_instance_uuid(Session& s, const std::string& uuid);
std::optional<Moref> find_by_inventory_path(Session& s, const std::string& path);  // "DC0/vm/DC0_H0_VM0"

// Parses config.hardware.device (a list of devices) into disks and NICs.
void parse_devices(const xml::Node& devices, VmInfo& vm);
// Parses a VirtualMachineSnapshotInfo (the "snapshot" property) into its tree, depth first.
std::vector<SnapshotRef> parse_snapshot_tree(const xml::Node& snapshot_info);

// The disk the VM boots from: the first disk in config.bootOptions.bootOrder when it names
// one, otherwise the first disk in the firmware's controller order (IDE, SATA, NVMe, then
// SCSI; by bus, then unit). Its key, or -1 for a VM without disks.
int boot_disk_key(const VmInfo& vm);

// Every VM's snapshots, in one property-collector query over the whole inventory (name,
// instance UUID, snapshot tree). A VM without a readable config (orphaned, inaccessible)
// is skipped; a VM whose answer cannot be parsed is reported in `errors`, not thrown.
struct VmSnapshots {
  Moref ref;
  std::string name;
  std::string instance_uuid;
  std::vector<SnapshotRef> snapshots;
};
std::vector<VmSnapshots> list_all_snapshots(Session& s, std::vector<std::string>& errors);

// "[datastore1] dir/file.vmdk" -> "datastore1" (throws mk::Error when malformed).
std::string datastore_of(const std::string& file_name);

}  // namespace mk::vsphere
