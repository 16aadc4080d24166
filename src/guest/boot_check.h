// The boot proof: does this VM's guest boot on KVM as CloudStack would attach it?
//
// boot_check() makes qcow2 overlays of the VM's disks (the replicas are only ever opened
// read-only), converts the overlays with virt-v2v-in-place (unless told not to), boots them
// in a throwaway qemu (KVM when usable, else TCG; virtio disks; no network) for at most
// `limit`, asks the guest kernel to sync, stops qemu by PID and reads back from the
// overlays whether the guest mounted its root read-write and reached its default target
// (boot_evidence.h). The serial console is kept as evidence for humans and used only to
// stop early (a login prompt, the lab guest's marker, a panic or an initramfs shell).
// Before the guest is synced and stopped, a picture of its VGA console is taken (QMP
// screendump), as evidence for humans too. A raised `cancel` stops conversion or boot at
// once and skips the read-back (the result says cancelled). Overlays, scratch files and
// qemu are removed in every case. Thread-safe (no shared state).
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "guest/boot_evidence.h"
#include "guest/overlay.h"

namespace mk::guest {

struct BootCheckOptions {
  std::string name = "guest";
  bool convert = true;                    // false: boot the disks as they are
  std::string firmware = "bios";          // from inspection
  int boot_disk = 0;                      // from inspection
  std::chrono::seconds limit{180};        // the boot itself, after conversion
  std::chrono::seconds conversion_timeout{1800};
  const std::atomic<bool>* cancel = nullptr;
  std::string scratch_parent;             // where the overlays go; "" = $TMPDIR (scratch_dir.h)
  std::string conversion_log;             // virt-v2v-in-place's output; "" = not kept
};

struct BootCheckResult {
  bool booted = false;
  bool converted = false;                 // conversion ran and succeeded
  bool timed_out = false;                 // the limit was reached with the guest still running
  bool cancelled = false;                 // `cancel` was raised: no verdict
  std::string reason;                     // why not booted, or the evidence when booted
  std::string accel;                      // "kvm" or "tcg"
  double seconds = 0;                     // boot: qemu start to boot seen (or to stop)
  double conversion_seconds = 0;
  std::string console_tail;               // the last 4 KiB of the serial console
  std::string screenshot;                 // the VGA console at the end of the wait (bytes)
  std::string screenshot_format;          // "png" or "ppm"; "" = none (see screenshot_error)
  std::string screenshot_error;
  BootEvidence evidence;
};

BootCheckResult boot_check(const std::vector<DiskImage>& disks, const BootCheckOptions& options);

// Everything but the screenshot's bytes (their format and size instead).
nlohmann::json to_json(const BootCheckResult& result);

}  // namespace mk::guest
