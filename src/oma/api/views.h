// JSON views shared by several routes so that they show the same fields: replication
// schedules and per-VM pass statistics (the VM list and the schedule routes), VMs as a
// VMA discovered them (discovery through the default VMA and through a paired one).
// Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include "oma/db/schedule_repository.h"
#include "oma/jobs/pass_stats.h"
#include "oma/vma/vma_client.h"

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

// A VM as the VMA discovered it (the protocol's fields), and whether the OMA manages it.
inline nlohmann::json discovered_vm_json(const DiscoveredVm& v, bool managed) {
  using nlohmann::json;
  json disks = json::array(), nics = json::array();
  for (const auto& d : v.disks) {
    disks.push_back({{"disk_key", d.disk_key}, {"unit", d.unit}, {"label", d.label},
                     {"capacity_bytes", d.capacity_bytes}});
  }
  for (const auto& n : v.nics) nics.push_back({{"key", n.key}, {"mac", n.mac}, {"network", n.network}});
  return {{"vm_id", v.vm_id}, {"name", v.name},   {"datacenter", v.datacenter}, {"power_state", v.power_state},
          {"cpus", v.cpus},   {"memory_mb", v.memory_mb}, {"guest_os", v.guest_os}, {"disks", disks},
          {"nics", nics},     {"managed", managed}};
}

}  // namespace mk::oma::api
