#include "oma/db/boot_check_repository.h"

#include "oma/db/table.h"

namespace mk::oma {

using db::column;
using db::Table;

namespace {

// Without the screenshot: most reads do not want it.
const Table<BootCheckRecord> kBootChecks{"vm_boot_checks", {column("vm_id", &BootCheckRecord::vm_id),
    column("job_id", &BootCheckRecord::job_id), column("started_by", &BootCheckRecord::started_by),
    column("booted", &BootCheckRecord::booted), column("reason", &BootCheckRecord::reason),
    column("inspection_seconds", &BootCheckRecord::inspection_seconds),
    column("conversion_seconds", &BootCheckRecord::conversion_seconds),
    column("boot_seconds", &BootCheckRecord::boot_seconds), column("console_tail", &BootCheckRecord::console_tail),
    column("details", &BootCheckRecord::details), column("screenshot_format", &BootCheckRecord::screenshot_format),
    column("started_at", &BootCheckRecord::started_at), column("finished_at", &BootCheckRecord::finished_at)}, 1};

}  // namespace

void BootCheckRepository::put(const BootCheckRecord& r) {
  db_.transaction([&] {
    db_.exec("DELETE FROM vm_boot_checks WHERE vm_id = ?", {r.vm_id});
    kBootChecks.insert(db_, r, {{"screenshot", r.screenshot_base64}});
  });
}

std::optional<BootCheckRecord> BootCheckRepository::find(const std::string& vm_id, bool with_screenshot) {
  auto r = kBootChecks.query_one(db_, "WHERE vm_id = ?", {vm_id});
  if (r && with_screenshot) {
    auto rows = db_.query("SELECT screenshot FROM vm_boot_checks WHERE vm_id = ?", {vm_id});
    if (!rows.empty() && !rows[0].is_null(0)) r->screenshot_base64 = rows[0].str(0);
  }
  return r;
}

std::map<std::string, BootCheckRecord> BootCheckRepository::all() {
  std::map<std::string, BootCheckRecord> out;
  for (auto& r : kBootChecks.query(db_, "ORDER BY vm_id")) out[r.vm_id] = std::move(r);
  return out;
}

}  // namespace mk::oma
