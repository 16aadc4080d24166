// What is installed on a VM's disks, read without changing them: virt-inspector opens the
// disks read-only (and qemu opens a qcow2 overlay's backing file read-only too).
//
// The answer says whether the guest can be converted for KVM, and if not, why, in words
// an operator can act on: a disk without an operating system, a Windows guest without the
// operator-provided virtio-win drivers, an OS virt-v2v cannot convert. Free functions;
// thread-safe (each call runs its own tools).
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "guest/overlay.h"

namespace mk::guest {

struct GuestInspection {
  bool os_found = false;
  std::string os_family;      // "linux", "windows", ... ("" when no OS)
  std::string distro;         // "debian", "rhel", "windows", ...
  std::string version;        // "12.x" style: major.minor as virt-inspector reports
  std::string product_name;
  std::string osinfo;         // libosinfo short id ("debian12"), "" when unknown
  std::string root_device;    // as the appliance names it ("/dev/sda1")
  int boot_disk = -1;         // index into the disks given (the disk holding the root fs)
  std::string firmware;       // "bios" or "uefi" (an EFI system partition is mounted)
  bool convertible = false;
  std::string reason;         // why not convertible ("" when convertible)
  double seconds = 0;
};

struct InspectOptions {
  std::chrono::seconds timeout{600};
  // Directory with virtio-win drivers (Windows guests are convertible only with it).
  std::string virtio_win;
  const std::atomic<bool>* cancel = nullptr;
};

// Inspects the disks of one VM, in unit order. Throws mk::Error only when the tools
// themselves cannot run (not installed, killed by the time limit); a disk without an OS
// is an answer (os_found false, not convertible), not an error.
GuestInspection inspect_guest(const std::vector<DiskImage>& disks, const InspectOptions& options = {});

// The device name the libguestfs appliance gives disk `index` ("/dev/sda", "/dev/sdb", ...)
// and back: the disk index a partition device ("/dev/sdb2") is on, -1 if none.
std::string appliance_disk_name(int index);
int appliance_disk_index(const std::string& device);

// Parses virt-inspector's XML (exposed for tests).
GuestInspection parse_inspector_xml(const std::string& xml, std::size_t disk_count);

nlohmann::json to_json(const GuestInspection& inspection);

// One line for a job's step: "debian 12.0 (linux), root /dev/sda1 on disk 0, bios (21 s)".
std::string summary(const GuestInspection& inspection);

}  // namespace mk::guest
