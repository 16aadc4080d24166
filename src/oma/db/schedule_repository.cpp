#include "oma/db/schedule_repository.h"

#include <fmt/format.h>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;
using db::Value;

namespace {

const Table<ScheduleRecord> kSchedules{"vm_schedules", {column("vm_id", &ScheduleRecord::vm_id),
    column("interval_minutes", &ScheduleRecord::interval_minutes), column("enabled", &ScheduleRecord::enabled),
    column("next_run_at", &ScheduleRecord::next_run_at), column("last_run_at", &ScheduleRecord::last_run_at),
    column("last_job_id", &ScheduleRecord::last_job_id), column("last_result", &ScheduleRecord::last_result),
    column("updated_at", &ScheduleRecord::updated_at)}, 1};

}  // namespace

void ScheduleRepository::put_schedule(const ScheduleRecord& s) {
  ScheduleRecord row = s;
  row.updated_at = now_ms();
  row.last_run_at.reset();
  row.last_job_id.reset();
  row.last_result.reset();
  db_.transaction([&] {
    // The VM's row is VmRepository's; this only asks whether it exists.
    if (db_.query("SELECT 1 FROM vm_contexts WHERE vm_id = ?", {s.vm_id}).empty())
      throw NotFound(fmt::format("VM {} is not known to the OMA: add it first (POST /api/v1/vms)", s.vm_id));
    if (kSchedules.update(db_, row, {"interval_minutes", "enabled", "next_run_at", "updated_at"}) == 0)
      kSchedules.insert(db_, row);
  });
}

std::optional<ScheduleRecord> ScheduleRepository::find_schedule(const std::string& vm_id) {
  return kSchedules.query_one(db_, "WHERE vm_id = ?", {vm_id});
}

std::vector<ScheduleRecord> ScheduleRepository::list_schedules() { return kSchedules.query(db_, "ORDER BY vm_id"); }

void ScheduleRepository::delete_schedule(const std::string& vm_id) {
  if (db_.exec("DELETE FROM vm_schedules WHERE vm_id = ?", {vm_id}) != 1)
    throw NotFound(fmt::format("VM {} has no schedule", vm_id));
}

void ScheduleRepository::record_schedule_run(const std::string& vm_id, int64_t at, int64_t next_run_at,
                                             const std::optional<std::string>& job_id, const std::string& result) {
  db_.exec("UPDATE vm_schedules SET last_run_at = ?, next_run_at = ?, last_job_id = COALESCE(?, last_job_id), "
           "last_result = ?, updated_at = ? WHERE vm_id = ?",
           {at, next_run_at, job_id ? Value(*job_id) : Value(), result, now_ms(), vm_id});
}

}  // namespace mk::oma
