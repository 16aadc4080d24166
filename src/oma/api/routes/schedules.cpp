// A VM's replication schedule: a repeating incremental pass.
#include <fmt/format.h>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kSchedulesTag{"Schedules", "Repeating incremental passes per VM (stored; they survive restarts)"};

const Schema kScheduleSchema{{
    {.name = "interval_minutes", .type = Field::Type::Integer,
     .description = "minutes between the starts of incremental passes", .min = 1, .max = 10080, .example = 60},
    {.name = "enabled", .type = Field::Type::Boolean, .description = "false keeps the schedule but pauses it",
     .example = true},
}, "ScheduleUpdate", "a VM's schedule"};

const Schema kScheduleDeleted{{
    uuid_field("vm_id", "the VM"),
    bool_field("deleted", "always true"),
}};

}  // namespace

std::vector<Route> schedule_routes(const Services& s) {
  ScheduleRepository& schedules = s.repos.schedules;
  VmRepository& vms = s.repos.vms;
  Scheduler& scheduler = s.scheduler;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}/schedule",
      .operation_id = "getSchedule",
      .tag = &kSchedulesTag,
      .summary = "A VM's repeating incremental pass",
      .description = "A VM's schedule: its interval, whether it is enabled, when it fires next and what happened "
                     "when it last fired.",
      .role = "viewer",
      .params = {vm_id_path_param()},
      .responses = {{200, "the schedule", &kSchedule}, {404, "no such VM, or it has no schedule"}},
      .handler = [&schedules, &vms](const Request& req, const json&, const Caller&) -> Reply {
                 std::string id = req.param("vm_id");
                 vms.get_vm(id);
                 auto sc = schedules.find_schedule(id);
                 if (!sc) throw NotFound(fmt::format("VM {} has no schedule (PUT one to create it)", id));
                 return {200, schedule_json(*sc), ""};
               }});
  routes.push_back({
      .method = "PUT",
      .path = "/api/v1/vms/{vm_id}/schedule",
      .operation_id = "putSchedule",
      .tag = &kSchedulesTag,
      .summary = "Repeat a VM's incremental pass every interval_minutes (stored; survives restarts)",
      .description = "Creates or changes a VM's schedule. A pass that is due while the VM has an active job is "
                     "skipped (last_result says so).",
      .role = "operator",
      .params = {vm_id_path_param()},
      .body = &kScheduleSchema,
      .responses = {{200, "the schedule", &kSchedule}, {404, "no such VM"}},
      .handler = [&scheduler](const Request& req, const json& b, const Caller&) -> Reply {
                 std::string id = req.param("vm_id");
                 auto sc = scheduler.put(id, b["interval_minutes"].get<int64_t>(), b["enabled"].get<bool>());
                 return {200, schedule_json(sc), ""};
               }});
  routes.push_back({
      .method = "DELETE",
      .path = "/api/v1/vms/{vm_id}/schedule",
      .operation_id = "deleteSchedule",
      .tag = &kSchedulesTag,
      .summary = "Remove a VM's schedule",
      .description = "Removes a VM's schedule; a pass it started goes on.",
      .role = "operator",
      .params = {vm_id_path_param()},
      .responses = {{200, "the schedule, removed", &kScheduleDeleted}, {404, "the VM has no schedule"}},
      .handler = [&schedules](const Request& req, const json&, const Caller&) -> Reply {
                 std::string id = req.param("vm_id");
                 schedules.delete_schedule(id);
                 return {200, {{"vm_id", id}, {"deleted", true}}, ""};
               }});
  return routes;
}

}  // namespace mk::oma::api
