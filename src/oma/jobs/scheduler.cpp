#include "oma/jobs/scheduler.h"

#include <fmt/format.h>

#include "common/log.h"
#include "oma/errors.h"

namespace mk::oma {

Scheduler::Scheduler(ScheduleRepository& schedules, VmRepository& vms, SchedulerOptions options)
    : schedules_(schedules), vms_(vms), options_(std::move(options)) {
  if (!options_.start_job) throw Error("Scheduler needs a job starter");
}

Scheduler::~Scheduler() { stop(); }

int64_t Scheduler::now() const { return options_.now_ms ? options_.now_ms() : now_ms(); }

void Scheduler::start() {
  std::lock_guard lock(mu_);
  stopping_ = false;
  if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
}

void Scheduler::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

void Scheduler::loop() {
  for (;;) {
    {
      std::unique_lock lock(mu_);
      cv_.wait_for(lock, options_.check_interval, [&] { return stopping_ || woken_; });
      if (stopping_) return;
      woken_ = false;
    }
    try {
      run_due();
    } catch (const std::exception& e) {
      // The database may be briefly unavailable (MariaDB restart): try again next tick.
      log::error("scheduler: {}", e.what());
    }
  }
}

ScheduleRecord Scheduler::put(const std::string& vm_id, int64_t interval_minutes, bool enabled) {
  ScheduleRecord s;
  s.vm_id = vm_id;
  s.interval_minutes = interval_minutes;
  s.enabled = enabled;
  s.next_run_at = now() + interval_minutes * 60000;
  schedules_.put_schedule(s);
  wake();
  return *schedules_.find_schedule(vm_id);
}

int Scheduler::run_due() {
  std::lock_guard serial(run_mu_);
  int started = 0;
  for (const auto& s : schedules_.list_schedules()) {
    int64_t t = now();
    if (!s.enabled || s.next_run_at > t) continue;
    int64_t next = t + s.interval_minutes * 60000;
    auto vm = vms_.find_vm(s.vm_id);
    if (!vm) continue;  // removed with its VM (cascade) between the two reads
    if (vm->current_job_id) {
      schedules_.record_schedule_run(s.vm_id, t, next, std::nullopt,
                                 fmt::format("skipped: job {} was still active", *vm->current_job_id));
      continue;
    }
    try {
      std::string job = options_.start_job(s.vm_id, JobKind::Incremental);
      schedules_.record_schedule_run(s.vm_id, t, next, job, "started incremental pass " + job);
      log::info("scheduler: VM {} ({}): started incremental pass {}", vm->name, s.vm_id, job);
      ++started;
    } catch (const Conflict& e) {
      schedules_.record_schedule_run(s.vm_id, t, next, std::nullopt, std::string("skipped: ") + e.what());
    } catch (const std::exception& e) {
      // E.g. no committed change ID yet: say so on the schedule; the next run retries.
      schedules_.record_schedule_run(s.vm_id, t, next, std::nullopt, std::string("not started: ") + e.what());
      log::warn("scheduler: VM {} ({}): {}", vm->name, s.vm_id, e.what());
    }
  }
  return started;
}

}  // namespace mk::oma
