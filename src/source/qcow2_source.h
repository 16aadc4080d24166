// Qcow2Source: qcow2 images with persistent dirty bitmaps as a SourceDriver, a real
// Changed Block Tracking source without VMware (KVM migrations, the demo, the tests).
//
// A "VM" is a named list of qcow2 images, one per disk (key = index). Change IDs are
// bitmap names. A pass, per image:
//   * removes leftover bitmaps of ours ("<prefix>...") other than the stored one;
//   * adds a new persistent bitmap (it records every write from now on);
//   * serves the image read-only with qemu-nbd, exporting the stored bitmap, so that the
//     engine copies the areas of qemu:dirty-bitmap:<stored> (an incremental pass), or
//     the whole image when there is no usable stored bitmap (a full pass, with reason);
//   * close(true) stops qemu-nbd and removes the stored bitmap: the new one is the change
//     ID to store. close(false) removes the new bitmap instead: the stored one still
//     holds every change since the last successful pass.
// The images must not be written during a pass (qemu-nbd holds them read-only; a running
// guest would need QMP backups, which this driver does not do). Not thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "source/source_driver.h"

namespace mk::source {

struct Qcow2Vm {
  std::string name;
  std::vector<std::string> images;  // absolute paths, one per disk
};

struct Qcow2BitmapInfo {
  std::string name;
  uint64_t granularity = 0;
  std::vector<std::string> flags;  // "auto" (enabled), "in-use" (inconsistent after a crash)
};

// The image's virtual size and persistent bitmaps (qemu-img info). Throws mk::Error.
uint64_t qcow2_virtual_size(const std::string& image);
std::vector<Qcow2BitmapInfo> qcow2_bitmaps(const std::string& image);

class Qcow2Source : public SourceDriver {
 public:
  // vms: id -> VM. work_dir: an existing private directory for qemu-nbd sockets.
  Qcow2Source(std::map<std::string, Qcow2Vm> vms, std::string work_dir, std::string bitmap_prefix = "mk-");

  std::vector<VmSummary> list_vms() override;
  std::vector<DiskDescription> describe_disks(const std::string& vm_id) override;
  std::unique_ptr<Pass> open_pass(const std::string& vm_id, const ChangeIds& stored) override;

 private:
  const Qcow2Vm& vm(const std::string& id) const;

  std::map<std::string, Qcow2Vm> vms_;
  std::string work_dir_;
  std::string prefix_;
};

}  // namespace mk::source
