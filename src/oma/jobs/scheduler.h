// Scheduler: repeats each scheduled VM's incremental pass every N minutes.
//
// Schedules live in the database (vm_schedules), so they survive OMA restarts; a
// schedule that fell due while the OMA was down runs once at the next check, not once
// per missed interval. When a schedule is due: if the VM has an active job the run is
// skipped (recorded as such); otherwise an incremental pass is started through the
// same JobManager the API uses. Either way the next run is one interval after now, and
// the outcome (job started, skipped, or why it could not start) is recorded on the
// schedule for the operator to see.
//
// The clock and the job starter are injected so tests drive run_due() with a fake
// clock. Owns its thread. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "oma/db/job_repository.h"
#include "oma/db/schedule_repository.h"
#include "oma/db/vm_repository.h"

namespace mk::oma {

struct SchedulerOptions {
  std::chrono::milliseconds check_interval{1000};
  std::function<int64_t()> now_ms;                                                  // default: wall clock
  std::function<std::string(const std::string& vm_id, JobKind kind)> start_job;  // returns job id
};

class Scheduler {
 public:
  Scheduler(ScheduleRepository& schedules, VmRepository& vms, SchedulerOptions options);
  ~Scheduler();

  void start();  // background thread calling run_due() every check_interval
  void stop();
  void wake();   // check now (a schedule was changed)

  // Runs every schedule due at the clock's now; returns how many jobs it started.
  int run_due();

  // Creates or replaces a VM's schedule; the first run is one interval from now.
  ScheduleRecord put(const std::string& vm_id, int64_t interval_minutes, bool enabled);

 private:
  void loop();
  int64_t now() const;

  ScheduleRepository& schedules_;
  VmRepository& vms_;
  SchedulerOptions options_;
  std::mutex mu_;  // guards stopping_, woken_
  std::condition_variable cv_;
  bool stopping_ = false, woken_ = false;
  std::mutex run_mu_;  // one run_due at a time (thread and tests)
  std::thread thread_;
};

}  // namespace mk::oma
