// A VM's replication schedule: a repeating incremental pass.
#include <fmt/format.h>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Schema kScheduleSchema{{
    {.name = "interval_minutes", .type = Field::Type::Integer,
     .description = "minutes between the starts of incremental passes", .min = 1, .max = 10080},
    {.name = "enabled", .type = Field::Type::Boolean, .description = "false keeps the schedule but pauses it"},
}};

}  // namespace

std::vector<Route> schedule_routes(const Services& s) {
  ScheduleRepository& schedules = s.repos.schedules;
  VmRepository& vms = s.repos.vms;
  Scheduler& scheduler = s.scheduler;
  std::vector<Route> routes;
  routes.push_back({"GET", "/api/v1/vms/{vm_id}/schedule", "A VM's repeating incremental pass", "operator", nullptr,
               [&schedules, &vms](const Request& req, const json&, const Caller&) -> Reply {
                 std::string id = uuid_param(req, "vm_id");
                 vms.get_vm(id);
                 auto sc = schedules.find_schedule(id);
                 if (!sc) throw NotFound(fmt::format("VM {} has no schedule (PUT one to create it)", id));
                 return {200, schedule_json(*sc), ""};
               }});
  routes.push_back({"PUT", "/api/v1/vms/{vm_id}/schedule",
               "Repeat a VM's incremental pass every interval_minutes (stored; survives restarts)", "operator",
               &kScheduleSchema, [&scheduler](const Request& req, const json& b, const Caller&) -> Reply {
                 std::string id = uuid_param(req, "vm_id");
                 auto sc = scheduler.put(id, b["interval_minutes"].get<int64_t>(), b["enabled"].get<bool>());
                 return {200, schedule_json(sc), ""};
               }});
  routes.push_back({"DELETE", "/api/v1/vms/{vm_id}/schedule", "Remove a VM's schedule", "operator", nullptr,
               [&schedules](const Request& req, const json&, const Caller&) -> Reply {
                 std::string id = uuid_param(req, "vm_id");
                 schedules.delete_schedule(id);
                 return {200, {{"vm_id", id}, {"deleted", true}}, ""};
               }});
  return routes;
}

}  // namespace mk::oma::api
