// GET /api/v1/events: live events as server-sent events (job progress per disk, job
// states, steps, log; heartbeats). See gui/event_hub.h.
#include "oma/api/routes/routes.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

void stream_events(gui::EventHub& hub, const httplib::Request& req, httplib::Response& res) {
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
        if (frames->empty()) frames->push_back(gui::sse_frame("heartbeat", {{"at", now_ms()}}));
        for (const auto& f : *frames) {
          if (!sink.is_writable() || !sink.write(f.data(), f.size())) return false;  // the client left
        }
        return true;
      },
      [&hub, sub](bool) { hub.unsubscribe(sub); });
}

}  // namespace

std::vector<Route> event_routes(const Services& s) {
  gui::EventHub& events = s.events;
  std::vector<Route> routes;
  Route ev{"GET", "/api/v1/events",
           "Live events (server-sent events: job progress per disk, job states, steps, log; heartbeats). "
           "Needs Accept: text/event-stream",
           "operator", nullptr, nullptr};
  ev.stream = [&events](const Request& req, httplib::Response& res, const Caller&) {
    stream_events(events, req.http, res);
  };
  routes.push_back(std::move(ev));
  return routes;
}

}  // namespace mk::oma::api
