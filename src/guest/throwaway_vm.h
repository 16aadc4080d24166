// A throwaway qemu that boots a VM's disks as CloudStack's KVM attaches them (virtio
// disks, no network), for a boot check.
//
// The serial console goes to a file; an HMP monitor on a Unix socket in the caller's
// directory lets sync_disks() ask the guest kernel to write its caches out (SysRq s and u:
// sync, remount read-only) before the VM is stopped, so what the guest wrote during boot
// (its journal) is on the overlay for read-back. A QMP socket next to it gives
// screendump() a picture of the VGA console (what an operator would see in CloudStack's
// console). The qemu is stopped by PID in stop() and in the destructor, whatever
// happened. Not thread-safe; one owner.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "guest/accel.h"
#include "guest/overlay.h"

namespace mk::guest {

class ThrowawayVm {
 public:
  // Starts qemu on `disks` (unit order; `boot_disk` gets bootindex 0) with its files in
  // `dir`. Throws mk::Error when qemu cannot start.
  ThrowawayVm(const std::vector<DiskImage>& disks, int boot_disk, const std::string& firmware,
              const std::string& dir, Accel accel);
  ~ThrowawayVm();
  ThrowawayVm(const ThrowawayVm&) = delete;
  ThrowawayVm& operator=(const ThrowawayVm&) = delete;

  bool running();
  pid_t pid() const { return qemu_.pid(); }
  // Everything the guest printed on its serial console so far.
  std::string console() const;
  const std::string& console_path() const { return console_path_; }

  // SysRq sync + remount read-only, then waits (at most `wait`) until the kernel reports
  // the remount done. Returns false when the monitor did not answer (qemu gone).
  bool sync_disks(std::chrono::seconds wait);
  // Writes a picture of the VGA console to `path` with QMP `screendump`: PNG when this
  // qemu can (7.1 and later, built with libpng, as Debian's is), else PPM. Returns the
  // format written ("png" or "ppm"), or "" with `error` saying why when qemu did not
  // write one (gone, or no answer within `wait`).
  std::string screendump(const std::string& path, std::string& error,
                         std::chrono::seconds wait = std::chrono::seconds(10));
  void stop();

 private:
  bool monitor_command(const std::string& command);
  Subprocess qemu_;
  std::string console_path_;
  std::string monitor_path_;
  std::string qmp_path_;
};

}  // namespace mk::guest
