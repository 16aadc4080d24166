// ScheduleRepository: each VM's repeating incremental pass (vm_schedules, one per VM),
// kept in the database so that a schedule survives restarts. The Scheduler
// (jobs/scheduler.h) runs them.
//
// A schedule belongs to a known VM (put_schedule throws NotFound otherwise) and goes
// with it (ON DELETE CASCADE).
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "oma/db/database.h"

namespace mk::oma {

// Times in ms since the Unix epoch.
struct ScheduleRecord {
  std::string vm_id;
  int64_t interval_minutes = 0;
  bool enabled = false;
  int64_t next_run_at = 0;
  std::optional<int64_t> last_run_at;
  std::optional<std::string> last_job_id, last_result;
  int64_t updated_at = 0;
};

class ScheduleRepository {
 public:
  explicit ScheduleRepository(db::Database& db) : db_(db) {}

  // Inserts or replaces the interval, enabled flag and next run; keeps the last run's
  // record.
  void put_schedule(const ScheduleRecord& s);
  std::optional<ScheduleRecord> find_schedule(const std::string& vm_id);
  std::vector<ScheduleRecord> list_schedules();  // by VM
  // Throws NotFound if the VM has no schedule.
  void delete_schedule(const std::string& vm_id);
  // Records what a due schedule did and when it runs next (job_id: the job it started).
  void record_schedule_run(const std::string& vm_id, int64_t at, int64_t next_run_at,
                           const std::optional<std::string>& job_id, const std::string& result);

 private:
  db::Database& db_;
};

}  // namespace mk::oma
