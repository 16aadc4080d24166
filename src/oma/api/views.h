// JSON views of the OMA's records, shared by the routes (and the event stream) so that
// every place shows the same fields: VMs and their disks, jobs and their disks,
// replication schedules and per-VM pass statistics (the VM list and the schedule
// routes), VMs as a VMA discovered them (discovery through the default VMA and through a
// paired one). Pure functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "oma/db/boot_check_repository.h"
#include "oma/db/inspection_repository.h"
#include "oma/db/schedule_repository.h"
#include "oma/jobs/pass_stats.h"
#include "oma/vma/vma_client.h"

namespace mk::oma::api {

// The value, or null.
nlohmann::json opt_json(const std::optional<std::string>& s);
nlohmann::json opt_json(const std::optional<int64_t>& n);

nlohmann::json vm_json(const VmRecord& v);
nlohmann::json disk_json(const DiskRecord& d);
nlohmann::json job_json(const JobRecord& j);
nlohmann::json job_disk_json(const JobDiskRecord& d);

// A job with its disks as GET /api/v1/jobs/{id}/progress shows it (the event stream
// sends the same view).
nlohmann::json job_progress_json(const JobRecord& job, const std::vector<JobDiskRecord>& disks);

nlohmann::json schedule_json(const ScheduleRecord& s);

// A VM's last boot check: in short (the VM list), with evidence and console tail (the
// VM's detail), or also with the screenshot (GET .../boot-check; read with it).
enum class BootCheckView { Summary, Full, WithScreenshot };
nlohmann::json boot_check_json(const BootCheckRecord& r, BootCheckView view);

// A VM's last inspection: all of it (GET .../inspection), or in short ("guest" in the VM
// list and detail: os, convertible, reason).
nlohmann::json inspection_json(const InspectionRecord& r);
nlohmann::json guest_summary_json(const InspectionRecord& r);

// Adds last_pass, change_id_age_seconds, ready_for_cutover, cutover_blockers and
// predicted_downtime_seconds (see pass_stats.h for the formula) to a VM's JSON.
void add_pass_stats(nlohmann::json& vm, const VmPassStats& s);

// A VM as the VMA discovered it (the protocol's DiscoveredVm), whether the OMA manages it,
// and whether its findings block a pass.
nlohmann::json discovered_vm_json(const protocol::DiscoveredVm& v, bool managed);

}  // namespace mk::oma::api
