#include "lab/vcsim/lab_vm.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "lab/vcsim/vcsim_lab.h"
#include "support/files.h"
#include "vsphere/tasks.h"

namespace mk::test {

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
                             const std::string& datastore, uint64_t capacity_bytes, const std::string& file_stem) {
  std::set<int> used;
  for (const auto& d : vm.disks) {
    if (d.controller_key == controller_key) used.insert(d.unit_number);
  }
  int unit = 0;
  while (used.count(unit) || unit == 7) ++unit;  // unit 7 is the SCSI controller itself
  std::string spec = fmt::format(
      "<spec><deviceChange><operation>add</operation><fileOperation>create</fileOperation>"
      "<device xsi:type=\"VirtualDisk\"><key>-1</key>"
      "<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\"><fileName>[{}] {}/{}.vmdk</fileName>"
      "<diskMode>persistent</diskMode><thinProvisioned>true</thinProvisioned></backing>"
      "<controllerKey>{}</controllerKey><unitNumber>{}</unitNumber><capacityInKB>{}</capacityInKB></device>"
      "</deviceChange></spec>",
      datastore, vm.name, file_stem, controller_key, unit, capacity_bytes / 1024);
  vsphere::run_task(s, "ReconfigVM_Task", vm.ref.xml("_this") + spec, "adding a disk to " + vm.name);
  return vsphere::describe_vm(s, vm.ref);
}

void fill_generated_disk(const std::string& flat_file, uint64_t size, uint64_t seed) {
  constexpr uint64_t kMiB = 1 << 20, kStride = 32 * kMiB, kPiece = 4 * kMiB;
  create_sparse_file(flat_file, size);
  for (uint64_t off = 0, i = 0; off < size; off += kStride, ++i) {
    write_random_at(flat_file, off, std::min(kPiece, size - off), seed * 1000003 + i);
    if (i % 4 == 1 && off + kPiece + kMiB <= size) fill_at(flat_file, off + kPiece, kMiB, 0);
  }
}

void scribble(const std::string& flat_file, uint64_t size, int count, uint64_t seed) {
  constexpr uint64_t kBlock = 64 * 1024;
  uint64_t blocks = size / kBlock;
  if (blocks == 0) return;
  uint64_t x = seed * 2654435761u + 1;
  for (int i = 0; i < count; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    write_random_at(flat_file, ((x >> 17) % blocks) * kBlock, kBlock, seed + i);
  }
}

}  // namespace mk::test
