// GET /api/v1/events: live events as server-sent events (job progress per disk, job
// states, steps, log; heartbeats). See gui/event_hub.h.
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"

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

const Tag kEventsTag{"Events", "Live events for the GUI: job progress, states, steps and log"};

const char* kStreamExample =
    "event: job\ndata: {\"job_id\":\"4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d\",\"status\":\"copying\",...}\n\n"
    "event: heartbeat\ndata: {\"at\":1764673200000}\n\n";

}  // namespace

std::vector<Route> event_routes(const Services& s) {
  gui::EventHub& events = s.events;
  std::vector<Route> routes;
  Route ev{
      .method = "GET",
      .path = "/api/v1/events",
      .operation_id = "streamEvents",
      .tag = &kEventsTag,
      .summary = "Live events (server-sent events: job progress per disk, job states, steps, log; heartbeats). "
                 "Needs Accept: text/event-stream",
      .description = "A server-sent event stream: each job's progress (the view of GET "
                     "/api/v1/jobs/{job_id}/progress) as it changes, job states, steps and log lines, and a "
                     "heartbeat when nothing happens. Needs Accept: text/event-stream.",
      .role = "viewer",
      .responses = {{.status = 200, .description = "the stream (it ends when the OMA stops)",
                     .media_type = "text/event-stream", .text_example = kStreamExample},
                    {406, "the request does not accept text/event-stream"},
                    {503, "the event stream is not available (the OMA is stopping)"}}};
  ev.stream = [&events](const Request& req, httplib::Response& res, const Caller&) {
    stream_events(events, req.http, res);
  };
  routes.push_back(std::move(ev));
  return routes;
}

}  // namespace mk::oma::api
