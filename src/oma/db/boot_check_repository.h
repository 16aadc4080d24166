// BootCheckRepository: the last boot check of each VM (vm_boot_checks): whether the
// guest booted from overlays of the VM's replicas, the evidence, how long conversion and
// boot took, the serial console's tail and a picture of the VGA console.
//
// One row per VM, replaced by the VM's next boot check, removed with the VM. The
// screenshot (PNG bytes, base64 in the database) is read only by find(…, true): the VM
// list and detail need the rest, not the picture. Does not own the Database. Thread-safe:
// each method is one statement on the thread-safe Database.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "oma/db/database.h"

namespace mk::oma {

struct BootCheckRecord {
  std::string vm_id, job_id;
  std::string started_by;          // "api" (an operator) or "after_incremental" (the OMA setting)
  bool booted = false;
  std::string reason;              // the evidence when booted, else why not
  double inspection_seconds = 0;   // virt-inspector
  double conversion_seconds = 0;   // virt-v2v-in-place on the overlays
  double boot_seconds = 0;         // qemu started to boot seen (or to the limit)
  std::string console_tail;        // the last 4 KiB of the serial console (text)
  std::string details;             // JSON: evidence, accelerator, inspection, time-out
  std::string screenshot_format;   // "png", "ppm" or "" (none)
  std::string screenshot_base64;   // only when asked for (find(…, true))
  int64_t started_at = 0, finished_at = 0;
};

class BootCheckRepository {
 public:
  explicit BootCheckRepository(db::Database& db) : db_(db) {}

  // Replaces the VM's last boot check.
  void put(const BootCheckRecord& r);
  std::optional<BootCheckRecord> find(const std::string& vm_id, bool with_screenshot = false);
  // Every VM's last boot check, without screenshots, by VM (the VM list).
  std::map<std::string, BootCheckRecord> all();

 private:
  db::Database& db_;
};

}  // namespace mk::oma
