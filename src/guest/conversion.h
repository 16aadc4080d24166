// Converting a VM's guest for KVM with virt-v2v-in-place: virtio drivers in the initramfs
// (or Windows' registry), fstab and bootloader fixed, over all of the VM's disks at once.
//
// convert_images() converts the given images in place (the boot check passes qcow2
// overlays). convert_volumes() never lets a failed conversion touch the volumes: it
// converts qcow2 overlays over them and commits the overlays into the volumes only when
// virt-v2v-in-place succeeded; on failure, time-out or cancel the overlays are deleted and
// the volumes stay byte-identical. Before committing it saves what the commits will
// overwrite on every (raw) volume, so that a commit failing at any disk puts every
// volume back as it was. Free functions; thread-safe (each call has its own
// scratch directory and processes, stopped by PID).
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "guest/overlay.h"

namespace mk::guest {

struct ConversionOptions {
  std::string name = "guest";           // the VM's name, for the domain XML and messages
  std::string firmware = "bios";        // "bios" or "uefi" (from inspection)
  std::chrono::seconds timeout{1800};
  std::string log_path;                 // virt-v2v-in-place's output; "" = not kept
  const std::atomic<bool>* cancel = nullptr;
};

struct ConversionResult {
  bool ok = false;
  std::string error;                    // what failed and what to do ("" when ok)
  double seconds = 0;                   // virt-v2v-in-place's run time
  double commit_seconds = 0;            // convert_volumes(): writing overlays into volumes
  // convert_volumes(): a failed commit could not put every volume back; they are neither
  // the final pass nor a converted guest (only a full pass makes them the source again).
  bool volumes_changed = false;
  std::string log_tail;                 // the end of virt-v2v-in-place's output
};

// Converts `images` (unit order) in place. Never throws for a failed conversion (see
// ConversionResult); throws mk::Error when the scratch directory cannot be made.
ConversionResult convert_images(const std::vector<DiskImage>& images, const ConversionOptions& options);

// Converts overlays over `volumes` and commits them into the volumes on success only.
ConversionResult convert_volumes(const std::vector<DiskImage>& volumes, const ConversionOptions& options);

}  // namespace mk::guest
