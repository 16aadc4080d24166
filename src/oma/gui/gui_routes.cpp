#include "oma/gui/gui_routes.h"

#include <fmt/format.h>

#include "oma/api/views.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma::gui {

using api::Caller;
using api::Field;
using api::FieldError;
using api::Reply;
using api::Route;
using api::Schema;
using nlohmann::json;

namespace {

const Schema kScheduleSchema{{
    {.name = "interval_minutes", .type = Field::Type::Integer,
     .description = "minutes between the starts of incremental passes", .min = 1, .max = 10080},
    {.name = "enabled", .type = Field::Type::Boolean, .description = "false keeps the schedule but pauses it"},
}};

std::string vm_param(const httplib::Request& req) {
  std::string v = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (!is_uuid(v)) throw FieldError("vm_id", "must be a lowercase UUID in the path");
  return v;
}

void stream_events(EventHub& hub, const httplib::Request& req, httplib::Response& res) {
  if (req.get_header_value("Accept").find("text/event-stream") == std::string::npos) {
    res.status = 406;
    res.set_content(json{{"error", "this route streams server-sent events: send Accept: text/event-stream"}}.dump(),
                    "application/json");
    return;
  }
  auto sub = hub.subscribe();
  auto heartbeat = hub.options().heartbeat;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");  // proxies must not hold events back
  res.set_chunked_content_provider(
      "text/event-stream",
      [sub, heartbeat](size_t, httplib::DataSink& sink) {
        auto frames = sub->next(heartbeat);
        if (!frames) {  // the OMA is stopping
          sink.done();
          return true;
        }
        if (frames->empty()) frames->push_back(sse_frame("heartbeat", {{"at", now_ms()}}));
        for (const auto& f : *frames) {
          if (!sink.is_writable() || !sink.write(f.data(), f.size())) return false;  // the client left
        }
        return true;
      },
      [&hub, sub](bool) { hub.unsubscribe(sub); });
}

json opt_json(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

}  // namespace

std::vector<Route> gui_routes(VmRepository& vms, ScheduleRepository& schedules, EventHub& events, Scheduler& scheduler,
                              VmaClient& vma) {
  std::vector<Route> r;
  Route ev{"GET", "/api/v1/events",
           "Live events (server-sent events: job progress per disk, job states, steps, log; heartbeats). "
           "Needs Accept: text/event-stream",
           "operator", nullptr, nullptr};
  ev.stream = [&events](const httplib::Request& req, httplib::Response& res, const Caller&) {
    stream_events(events, req, res);
  };
  r.push_back(std::move(ev));

  r.push_back({"GET", "/api/v1/vms/{vm_id}/schedule", "A VM's repeating incremental pass", "operator", nullptr,
               [&vms, &schedules](const httplib::Request& req, const json&, const Caller&) -> Reply {
                 std::string id = vm_param(req);
                 vms.get_vm(id);
                 auto s = schedules.find_schedule(id);
                 if (!s) throw NotFound(fmt::format("VM {} has no schedule (PUT one to create it)", id));
                 return {200, api::schedule_json(*s), ""};
               }});
  r.push_back({"PUT", "/api/v1/vms/{vm_id}/schedule",
               "Repeat a VM's incremental pass every interval_minutes (stored; survives restarts)", "operator",
               &kScheduleSchema, [&scheduler](const httplib::Request& req, const json& b, const Caller&) -> Reply {
                 std::string id = vm_param(req);
                 auto s = scheduler.put(id, b["interval_minutes"].get<int64_t>(), b["enabled"].get<bool>());
                 return {200, api::schedule_json(s), ""};
               }});
  r.push_back({"DELETE", "/api/v1/vms/{vm_id}/schedule", "Remove a VM's schedule", "operator", nullptr,
               [&schedules](const httplib::Request& req, const json&, const Caller&) -> Reply {
                 std::string id = vm_param(req);
                 schedules.delete_schedule(id);
                 return {200, {{"vm_id", id}, {"deleted", true}}, ""};
               }});
  r.push_back({"GET", "/api/v1/discover", "VMs in the VMA's vCenter, each marked managed if the OMA knows it",
               "operator", nullptr, [&vms, &vma](const httplib::Request&, const json&, const Caller&) -> Reply {
                 Discovery d;
                 try {
                   d = vma.discover();
                 } catch (const std::exception& e) {
                   return {502, {{"error", fmt::format("discovery through {} failed: {}; check the VMA and its "
                                                       "tunnel (Infrastructure page)",
                                                       vma.describe(), e.what())}}, ""};
                 }
                 json found = json::array();
                 for (const auto& v : d.vms) found.push_back(api::discovered_vm_json(v, vms.find_vm(v.vm_id).has_value()));
                 return {200, {{"vcenter", d.vcenter}, {"vms", found}}, ""};
               }});
  r.push_back({"GET", "/api/v1/vma/health", "The VMA's health (vCenter, tunnel) as the OMA sees it", "operator",
               nullptr, [&vma](const httplib::Request&, const json&, const Caller&) -> Reply {
                 try {
                   VmaHealth h = vma.health();
                   return {200,
                           {{"status", h.status},
                            {"vma", vma.describe()},
                            {"vma_instance", h.vma_instance},
                            {"vcenter", {{"reachable", h.vcenter_reachable}, {"error", opt_json(h.vcenter_error)}}},
                            {"tunnel", {{"state", h.tunnel_state}, {"since", h.tunnel_since},
                                        {"error", opt_json(h.tunnel_error)}}}},
                           ""};
                 } catch (const std::exception& e) {
                   return {200, {{"status", "unreachable"}, {"vma", vma.describe()}, {"error", e.what()}}, ""};
                 }
               }});
  return r;
}

}  // namespace mk::oma::gui
