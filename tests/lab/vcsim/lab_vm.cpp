#include "lab/vcsim/lab_vm.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "lab/vcsim/vcsim_lab.h"
#include "support/files.h"
#include "common/error.h"
#include "common/subprocess.h"
#include "vsphere/tasks.h"

namespace mk::test {

namespace xml = vsphere::xml;

namespace {

// vcsim ends a reconfiguration within milliseconds: poll it that often, not at the
// 25 ms (growing) a real vCenter's tasks deserve (a lab of 256 VMs runs 768 of them).
vsphere::TaskWait lab_wait() {
  vsphere::TaskWait w;
  w.timeout = std::chrono::seconds(120);
  w.poll = std::chrono::milliseconds(5);
  w.poll_max = std::chrono::milliseconds(100);
  return w;
}

}  // namespace

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
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "adding a disk to " + vm.name, lab_wait());
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
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "growing a disk of " + vm.name, lab_wait());
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
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "adding a " + type + " to " + vm.name, lab_wait());
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
                    "setting the boot order of " + vm.name, lab_wait());
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

void fill_light_disk(const std::string& flat_file, uint64_t size, uint64_t seed) {
  constexpr uint64_t kPiece = 64 * 1024;
  create_sparse_file(flat_file, size);
  write_random_at(flat_file, 0, std::min(kPiece, size), seed * 1000003);
  uint64_t middle = size / 2 / kPiece * kPiece;
  if (middle >= kPiece && middle + kPiece <= size) write_random_at(flat_file, middle, kPiece, seed * 1000003 + 1);
}

namespace {

// Removes the VM's first disk (vcsim gives every VM a 1 MiB one and cannot grow it),
// keeping its controller for the disks the lab adds.
vsphere::VmInfo remove_first_disk(vsphere::Session& s, const vsphere::VmInfo& vm) {
  const auto& d = vm.disks.front();
  std::string spec = fmt::format(
      "<spec><deviceChange><operation>remove</operation><fileOperation>destroy</fileOperation>"
      "<device xsi:type=\"VirtualDisk\"><key>{}</key>"
      "<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>{}</fileName>"
      "<diskMode>persistent</diskMode></backing>"
      "<controllerKey>{}</controllerKey><unitNumber>{}</unitNumber><capacityInKB>{}</capacityInKB></device>"
      "</deviceChange></spec>",
      d.key, d.file_name, d.controller_key, d.unit_number, d.capacity_bytes / 1024);
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "removing the first disk of " + vm.name, lab_wait());
  return vsphere::describe_vm(s, vm.ref);
}

}  // namespace

nlohmann::json seed_lab_vm(const VcsimLab& lab, vsphere::Session& s, const std::string& inventory_path,
                           const LabSeedOptions& o, int index) {
  auto ref = vsphere::find_by_inventory_path(s, inventory_path);
  if (!ref) throw Error("the lab has no VM " + inventory_path);
  auto vm = vsphere::describe_vm(s, *ref);
  if (vm.disks.empty()) throw Error("lab VM " + vm.name + " has no disk to take the controller from");
  int controller = vm.disks.front().controller_key;
  std::string datastore = vm.disks.front().datastore;
  // The first VM may be given raw images: its disks are their size.
  const bool images = index == 0 && !o.disk_images.empty();
  std::vector<uint64_t> sizes;
  if (images) {
    for (const auto& image : o.disk_images) {
      std::error_code ec;
      const uint64_t size = std::filesystem::file_size(image, ec);
      if (ec) throw Error(fmt::format("disk image {}: {}", image, ec.message()));
      if (size == 0 || size % 1024 != 0) {
        throw Error(fmt::format("disk image {}: {} bytes is not a positive multiple of 1 KiB, as vSphere sizes disks; "
                                "pad it (truncate -s %1K) or convert it to raw first",
                                image, size));
      }
      sizes.push_back(size);
    }
  } else {
    for (auto mib : o.disk_mib) sizes.push_back(mib << 20);
  }
  vm = remove_first_disk(s, vm);
  int datastores = lab.inventory().datastores;
  for (size_t i = 0; i < sizes.size(); ++i) {
    // With several datastores the disks spread over them, as a real site's do; with one
    // (the default lab) every disk stays beside the VM.
    std::string ds = datastores > 1 ? fmt::format("LocalDS_{}", (index + i) % datastores) : datastore;
    if (ds != datastore) {
      // vcsim makes a disk only in an existing folder; the VM's folder is on its own datastore.
      std::filesystem::create_directories(
          std::filesystem::path(lab.flat_file(fmt::format("[{}] {}/x.vmdk", ds, vm.name))).parent_path());
    }
    vm = add_lab_disk(s, vm, controller, ds, sizes[i], fmt::format("lab-disk{}", i));
  }
  nlohmann::json disks = nlohmann::json::array();
  for (size_t i = 0; i < vm.disks.size(); ++i) {
    const auto& d = vm.disks[i];
    std::string flat = lab.flat_file(d.file_name);
    uint64_t seed = o.seed * 100 + index * 10 + i;
    if (images) {
      // vm.disks are in the order they were added: image i is disk i.
      std::string out;
      if (run_capture({"cp", "--sparse=always", o.disk_images[i], flat}, out) != 0) {
        throw Error(fmt::format("copying disk image {} to {} failed: {}", o.disk_images[i], flat, out));
      }
    } else if (o.fill == LabFill::Dense) {
      create_sparse_file(flat, d.capacity_bytes);
      constexpr uint64_t kChunk = 64 << 20;  // bounded memory for large disks
      for (uint64_t off = 0; off < d.capacity_bytes; off += kChunk) {
        write_random_at(flat, off, std::min(kChunk, d.capacity_bytes - off), seed * 65537 + off / kChunk);
      }
    } else if (o.fill == LabFill::Light) {
      fill_light_disk(flat, d.capacity_bytes, seed);
    } else {
      fill_generated_disk(flat, d.capacity_bytes, seed);
    }
    disks.push_back({{"key", d.key},
                     {"unit", d.unit_number},
                     {"capacity_bytes", d.capacity_bytes},
                     {"file_name", d.file_name},
                     {"flat_file", flat}});
  }
  return {{"name", vm.name}, {"instance_uuid", vm.instance_uuid}, {"inventory_path", inventory_path}, {"disks", disks}};
}

nlohmann::json seed_lab_vms(const VcsimLab& lab, vsphere::Session& s, int count, const LabSeedOptions& o, int threads) {
  auto paths = lab.inventory().vm_paths();
  if (count < 0 || count > static_cast<int>(paths.size())) {
    throw Error(fmt::format("lab: {} VMs asked for, the inventory has {}", count, paths.size()));
  }
  std::vector<nlohmann::json> out(count);
  std::atomic<int> next{0};
  std::mutex m;
  std::exception_ptr first_error;
  auto work = [&] {
    for (int i; (i = next++) < count;) {
      try {
        out[i] = seed_lab_vm(lab, s, paths[i], o, i);
      } catch (...) {
        std::lock_guard lock(m);
        if (!first_error) first_error = std::current_exception();
        next = count;  // the others stop at their next VM
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < std::max(1, std::min(threads, count)); ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (first_error) std::rethrow_exception(first_error);
  return nlohmann::json(out);
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
