#include "lab/vcsim/lab_vm.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>
#include <vector>

#include "lab/vcsim/vcsim_lab.h"
#include "support/files.h"
#include "vsphere/tasks.h"

namespace mk::test {

namespace xml = vsphere::xml;

vsphere::ConnectOptions lab_connect_options(const VcsimLab& lab) {
  vsphere::ConnectOptions o;
  o.url = lab.url();
  o.user = lab.user();
  o.password_file = lab.password_file();
  o.tls.mode = vsphere::TlsPolicy::Mode::PinThumbprint;
  o.tls.thumbprint = lab.thumbprint();
  o.keepalive = std::chrono::seconds(0);
  return o;
}

vsphere::VmInfo add_lab_disk(vsphere::Session& s, const vsphere::VmInfo& vm, int controller_key,
                             const std::string& datastore, uint64_t capacity_bytes, const std::string& file_stem,
                             const LabDiskOptions& options) {
  std::set<int> used;
  for (const auto& d : vm.disks) {
    if (d.controller_key == controller_key) used.insert(d.unit_number);
  }
  int unit = 0;
  while (used.count(unit) || unit == 7) ++unit;  // unit 7 is the SCSI controller itself
  std::string file = fmt::format("[{}] {}/{}.vmdk", datastore, vm.name, file_stem);
  std::string backing;
  if (options.rdm_mode.empty()) {
    backing = fmt::format(
        "<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>{}</diskMode>"
        "<thinProvisioned>true</thinProvisioned>{}</backing>",
        file, options.disk_mode, options.sharing.empty() ? "" : "<sharing>" + options.sharing + "</sharing>");
  } else {
    // The mapping file of a LUN; the shim keeps vcsim unaware of what it maps.
    backing = fmt::format(
        "<backing xsi:type=\"VirtualDiskRawDiskMappingVer1BackingInfo\"><fileName>{}</fileName>"
        "<deviceName>/vmfs/devices/disks/naa.600a0980383030{:010d}</deviceName>"
        "<lunUuid>0200000000600a0980383030{:010d}4c554e</lunUuid><compatibilityMode>{}</compatibilityMode>"
        "<diskMode>{}</diskMode></backing>",
        file, unit, unit, options.rdm_mode,
        options.rdm_mode == "physicalMode" ? "independent_persistent" : options.disk_mode);
  }
  std::string spec = fmt::format(
      "<spec><deviceChange><operation>add</operation><fileOperation>create</fileOperation>"
      "<device xsi:type=\"VirtualDisk\"><key>-1</key>{}"
      "<controllerKey>{}</controllerKey><unitNumber>{}</unitNumber><capacityInKB>{}</capacityInKB></device>"
      "</deviceChange></spec>",
      backing, controller_key, unit, capacity_bytes / 1024);
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "adding a disk to " + vm.name);
  return vsphere::describe_vm(s, vm.ref);
}

vsphere::VmInfo grow_lab_disk(vsphere::Session& s, const vsphere::VmInfo& vm, int disk_key, uint64_t capacity_bytes) {
  auto it = std::find_if(vm.disks.begin(), vm.disks.end(), [&](const auto& d) { return d.key == disk_key; });
  if (it == vm.disks.end()) throw Error(fmt::format("lab: VM {} has no disk {}", vm.name, disk_key));
  // vcsim replaces the device with the one in the spec: the whole disk (deviceInfo too,
  // which it dereferences), its file kept.
  std::string spec = fmt::format(
      "<spec><deviceChange><operation>edit</operation><device xsi:type=\"VirtualDisk\"><key>{}</key>"
      "<deviceInfo><label>{}</label><summary></summary></deviceInfo><backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName><diskMode>{}</diskMode>"
      "<thinProvisioned>{}</thinProvisioned></backing><controllerKey>{}</controllerKey><unitNumber>{}</unitNumber>"
      "<capacityInKB>{}</capacityInKB><capacityInBytes>{}</capacityInBytes></device></deviceChange></spec>",
      disk_key, it->label, it->file_name, it->disk_mode.empty() ? "persistent" : it->disk_mode, it->thin ? "true" : "false",
      it->controller_key, it->unit_number, capacity_bytes / 1024, capacity_bytes);
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "growing a disk of " + vm.name);
  return vsphere::describe_vm(s, vm.ref);
}

int add_lab_controller(vsphere::Session& s, const vsphere::VmInfo& vm, const std::string& type,
                       const std::string& shared_bus) {
  std::vector<int> before;
  std::vector<xml::Document> keep;
  auto devices = [&] {
    std::vector<int> keys;
    auto p = vsphere::retrieve(s, vm.ref, {"config.hardware.device"}, keep);
    for (auto& d : p.get("config.hardware.device").children("VirtualDevice")) {
      if (d.xsi_type() == type) keys.push_back(static_cast<int>(vsphere::xml::to_int(d.text_of("key"), "key")));
    }
    return keys;
  };
  before = devices();
  bool scsi = type.find("SCSI") != std::string::npos || type.find("LsiLogic") != std::string::npos;
  std::string spec = fmt::format(
      "<spec><deviceChange><operation>add</operation><device xsi:type=\"{}\"><key>-100</key>"
      "<busNumber>{}</busNumber>{}</device></deviceChange></spec>",
      type, before.size() + (scsi ? 1 : 0), scsi ? "<sharedBus>" + shared_bus + "</sharedBus>" : "");
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "adding a " + type + " to " + vm.name);
  for (int key : devices()) {
    if (std::find(before.begin(), before.end(), key) == before.end()) return key;
  }
  throw Error(fmt::format("lab: vcsim did not add the {} to {}", type, vm.name));
}

void set_lab_boot_order(vsphere::Session& s, const vsphere::VmInfo& vm, const std::vector<int>& disk_keys) {
  std::string order;
  for (int key : disk_keys) {
    order += fmt::format(
        "<bootOrder xsi:type=\"VirtualMachineBootOptionsBootableDiskDevice\"><deviceKey>{}</deviceKey></bootOrder>",
        key);
  }
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + "<spec><bootOptions>" + order + "</bootOptions></spec>",
                    "setting the boot order of " + vm.name);
}

int first_disk_controller(const vsphere::VmInfo& vm) {
  if (vm.disks.empty()) throw Error(fmt::format("lab: VM {} has no disk", vm.name));
  return vm.disks.front().controller_key;
}

void fill_generated_disk(const std::string& flat_file, uint64_t size, uint64_t seed) {
  constexpr uint64_t kMiB = 1 << 20, kStride = 32 * kMiB, kPiece = 4 * kMiB;
  create_sparse_file(flat_file, size);
  for (uint64_t off = 0, i = 0; off < size; off += kStride, ++i) {
    write_random_at(flat_file, off, std::min(kPiece, size - off), seed * 1000003 + i);
    if (i % 4 == 1 && off + kPiece + kMiB <= size) fill_at(flat_file, off + kPiece, kMiB, 0);
  }
}

std::set<uint64_t> scribble(const std::string& flat_file, uint64_t size, int count, uint64_t seed) {
  constexpr uint64_t kBlock = 64 * 1024;
  uint64_t blocks = size / kBlock;
  std::set<uint64_t> written;
  if (blocks == 0) return written;
  uint64_t x = seed * 2654435761u + 1;
  for (int i = 0; i < count; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    uint64_t offset = ((x >> 17) % blocks) * kBlock;
    write_random_at(flat_file, offset, kBlock, seed + i);
    written.insert(offset);
  }
  return written;
}

}  // namespace mk::test
