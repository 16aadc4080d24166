// JSON views of replication schedules and per-VM pass statistics, shared by the VM list
// (GET /api/v1/vms) and the schedule routes so both show the same fields. Pure
// functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include "oma/db/records.h"
#include "oma/jobs/pass_stats.h"

namespace mk::oma::api {

inline nlohmann::json schedule_json(const ScheduleRecord& s) {
  using nlohmann::json;
  return {{"vm_id", s.vm_id},
          {"interval_minutes", s.interval_minutes},
          {"enabled", s.enabled},
          {"next_run_at", s.enabled ? json(s.next_run_at) : json(nullptr)},
          {"last_run_at", s.last_run_at ? json(*s.last_run_at) : json(nullptr)},
          {"last_job_id", s.last_job_id ? json(*s.last_job_id) : json(nullptr)},
          {"last_result", s.last_result ? json(*s.last_result) : json(nullptr)},
          {"updated_at", s.updated_at}};
}

// Adds last_pass, change_id_age_seconds, ready_for_cutover, cutover_blockers and
// predicted_downtime_seconds (see pass_stats.h for the formula) to a VM's JSON.
inline void add_pass_stats(nlohmann::json& vm, const VmPassStats& s) {
  using nlohmann::json;
  vm["last_pass"] = s.last_pass ? json{{"job_id", s.last_pass->job_id},
                                       {"kind", s.last_pass->kind},
                                       {"status", s.last_pass->status},
                                       {"finished_at", s.last_pass->finished_at},
                                       {"bytes", s.last_pass->bytes},
                                       {"seconds", s.last_pass->seconds}}
                                : json(nullptr);
  vm["change_id_age_seconds"] = s.change_id_age_seconds ? json(*s.change_id_age_seconds) : json(nullptr);
  vm["ready_for_cutover"] = s.ready_for_cutover;
  vm["cutover_blockers"] = s.cutover_blockers;
  vm["predicted_downtime_seconds"] =
      s.predicted_downtime_seconds ? json(*s.predicted_downtime_seconds) : json(nullptr);
  vm["prediction_passes"] = s.incremental_passes_used;
}

}  // namespace mk::oma::api
