#include "oma/db/inspection_repository.h"

#include "oma/db/table.h"

namespace mk::oma {

using db::column;
using db::Table;

namespace {

const Table<InspectionRecord> kInspections{"vm_inspections", {column("vm_id", &InspectionRecord::vm_id),
    column("job_id", &InspectionRecord::job_id), column("started_by", &InspectionRecord::started_by),
    column("os_found", &InspectionRecord::os_found), column("os_family", &InspectionRecord::os_family),
    column("distro", &InspectionRecord::distro), column("version", &InspectionRecord::version),
    column("product_name", &InspectionRecord::product_name), column("osinfo", &InspectionRecord::osinfo),
    column("root_device", &InspectionRecord::root_device), column("boot_disk", &InspectionRecord::boot_disk),
    column("boot_disk_key", &InspectionRecord::boot_disk_key), column("firmware", &InspectionRecord::firmware),
    column("vsphere_firmware", &InspectionRecord::vsphere_firmware),
    column("vsphere_secure_boot", &InspectionRecord::vsphere_secure_boot),
    column("convertible", &InspectionRecord::convertible), column("reason", &InspectionRecord::reason),
    column("seconds", &InspectionRecord::seconds), column("inspected_at", &InspectionRecord::inspected_at)}, 1};

}  // namespace

void InspectionRepository::put(const InspectionRecord& r) {
  db_.transaction([&] {
    db_.exec("DELETE FROM vm_inspections WHERE vm_id = ?", {r.vm_id});
    kInspections.insert(db_, r);
  });
}

std::optional<InspectionRecord> InspectionRepository::find(const std::string& vm_id) {
  return kInspections.query_one(db_, "WHERE vm_id = ?", {vm_id});
}

std::map<std::string, InspectionRecord> InspectionRepository::all() {
  std::map<std::string, InspectionRecord> out;
  for (auto& r : kInspections.query(db_, "ORDER BY vm_id")) out[r.vm_id] = std::move(r);
  return out;
}

}  // namespace mk::oma
