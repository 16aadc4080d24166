// InspectionRepository: the last guest inspection of each VM (vm_inspections): what
// virt-inspector found on the VM's replicas (OS, root, boot disk, firmware as the disks
// show it), vSphere's firmware setting of the source, and whether the guest can be
// converted for KVM, and if not, why.
//
// One row per VM, replaced by the VM's next inspection (an explicit one, the automatic
// one after a pass, a boot check's or a cutover's / test failover's), removed with the
// VM. Does not own the Database. Thread-safe: each method is one statement (or one
// transaction) on the thread-safe Database.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "oma/db/database.h"

namespace mk::oma {

struct InspectionRecord {
  std::string vm_id, job_id;
  // "api" (an operator), "after_pass" (the OMA after a pass), "boot_check", "cutover"
  // or "test_failover" (the inspection those jobs begin with).
  std::string started_by;
  bool os_found = false;
  std::string os_family;           // "linux", "windows", ... ("" when no OS)
  std::string distro;              // "debian", "rhel", "windows", ...
  std::string version;             // "12.12": major.minor
  std::string product_name;        // "Debian GNU/Linux 12 (bookworm)"
  std::string osinfo;              // libosinfo short id ("debian12"), "" when unknown
  std::string root_device;         // as the appliance names it ("/dev/sda1")
  int64_t boot_disk = -1;          // unit-order index of the disk with the root fs (-1: none)
  std::string boot_disk_key;       // that disk's key ("2000"), "" when none
  std::string firmware;            // what the disks show: "bios" or "uefi" ("" when no OS)
  std::string vsphere_firmware;    // vSphere's config.firmware: "bios", "efi", "" (not known)
  bool vsphere_secure_boot = false;
  bool convertible = false;
  std::string reason;              // why not convertible ("" when convertible)
  double seconds = 0;              // virt-inspector's run
  int64_t inspected_at = 0;        // when it ended (ms since the epoch)
};

class InspectionRepository {
 public:
  explicit InspectionRepository(db::Database& db) : db_(db) {}

  // Replaces the VM's last inspection.
  void put(const InspectionRecord& r);
  std::optional<InspectionRecord> find(const std::string& vm_id);
  // Every VM's last inspection, by VM (the VM list).
  std::map<std::string, InspectionRecord> all();

 private:
  db::Database& db_;
};

}  // namespace mk::oma
