// GET /health and GET /metrics.
#include <fmt/format.h>

#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

// Control tunnels of approved VMAs as the OMA sees them: {up, down}.
std::pair<int, int> approved_tunnels(Repositories& repos, PairingService& pairing) {
  int up = 0, down = 0;
  for (const auto& v : repos.vmas.list_vmas()) {
    if (v.state != VmaState::Approved) continue;
    (pairing.tunnel_state(v) == "up" ? up : down)++;
  }
  return {up, down};
}

std::string metrics(Repositories& repos, JobManager& jobs, ExportBackend& exports, PairingService* pairing) {
  std::string out;
  out += "# HELP oma_jobs Replication jobs by state.\n# TYPE oma_jobs gauge\n";
  for (const auto& [status, n] : repos.jobs.jobs_by_status())
    out += fmt::format("oma_jobs{{state=\"{}\"}} {}\n", status, n);
  auto [bytes, bps] = repos.jobs.job_totals();
  out += fmt::format("# HELP oma_bytes_moved_total Bytes copied by all jobs.\n# TYPE oma_bytes_moved_total counter\n"
                     "oma_bytes_moved_total {}\n", bytes);
  out += fmt::format("# HELP oma_throughput_bytes_per_second Summed throughput of active jobs.\n"
                     "# TYPE oma_throughput_bytes_per_second gauge\noma_throughput_bytes_per_second {}\n", bps);
  out += fmt::format("# HELP oma_exports NBD exports.\n# TYPE oma_exports gauge\noma_exports {}\n",
                     repos.storage.count_exports());
  out += fmt::format("# HELP oma_poller_errors_total Failed progress polls of the VMA.\n"
                     "# TYPE oma_poller_errors_total counter\noma_poller_errors_total {}\n", jobs.poller_errors());
  if (pairing) {
    auto [up, down] = approved_tunnels(repos, *pairing);
    out += fmt::format("# HELP oma_vma_tunnels Control tunnels of approved VMAs, by state as the OMA sees them.\n"
                       "# TYPE oma_vma_tunnels gauge\noma_vma_tunnels{{state=\"up\"}} {}\n"
                       "oma_vma_tunnels{{state=\"down\"}} {}\n", up, down);
  }
  out += "# HELP oma_pass_phase_seconds Time disks' passes spent per phase (snapshot ... reporting).\n"
         "# TYPE oma_pass_phase_seconds summary\n";
  for (const auto& t : repos.jobs.phase_totals()) {
    out += fmt::format("oma_pass_phase_seconds_sum{{phase=\"{}\"}} {}\noma_pass_phase_seconds_count{{phase=\"{}\"}} {}\n",
                       t.phase, t.seconds, t.phase, t.count);
  }
  out += fmt::format("# HELP oma_export_server_restarts_total Times the export server was restarted.\n"
                     "# TYPE oma_export_server_restarts_total counter\noma_export_server_restarts_total {}\n",
                     exports.restarts());
  return out;
}

const Schema kTunnels{{
    int_field("up", "approved VMAs whose tunnel port answers", 1),
    int_field("down", "approved VMAs whose tunnel port does not answer", 0),
}};

const Schema kHealth{{
    enum_field("status", "the OMA answers and its database is reachable", {"ok"}),
    {.name = "database", .description = "database engine", .one_of = {"sqlite", "mariadb"}},
    {.name = "export_server", .description = "NBD export server", .one_of = {"nbdkit", "nbd-server"}},
    int_field("export_server_pid", "its process id (0 or -1: not running)", 4242, -1),
    int_field("nbd_port", "the port it serves NBD on", 10809),
    optional(object_field("vma_tunnels", "tunnels of approved VMAs (with pairing)", &kTunnels)),
}, "Health", "the OMA's liveness"};

const char* kMetricsExample =
    "# HELP oma_jobs Replication jobs by state.\n# TYPE oma_jobs gauge\noma_jobs{state=\"completed\"} 3\n"
    "# HELP oma_bytes_moved_total Bytes copied by all jobs.\n# TYPE oma_bytes_moved_total counter\n"
    "oma_bytes_moved_total 3221225472\n";

}  // namespace

std::vector<Route> system_routes(const Services& s) {
  Repositories& repos = s.repos;
  JobManager& jobs = s.jobs;
  ExportBackend& exports = s.exports;
  PairingService* pairing = s.pairing;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/health",
      .operation_id = "getHealth",
      .tag = &kSystemTag,
      .summary = "Liveness: database reachable, export server running (no token needed)",
      .description = "Answers when the OMA serves requests and its database answers; says which export server "
                     "runs and, with pairing, how many approved VMAs hold their tunnel. Needs no token (for load "
                     "balancers and monitoring).",
      .role = "",
      .responses = {{200, "the OMA is alive", &kHealth}},
      .handler = [&repos, &exports, pairing](auto&, auto&, auto&) -> Reply {
                 repos.storage.count_exports();  // touches the database
                 json out = {{"status", "ok"}, {"database", repos.database.engine()},
                             {"export_server", exports.name()}, {"export_server_pid", exports.server_pid()},
                             {"nbd_port", exports.port()}};
                 if (pairing) {
                   auto [up, down] = approved_tunnels(repos, *pairing);
                   out["vma_tunnels"] = {{"up", up}, {"down", down}};  // approved VMAs only
                 }
                 return {200, out, ""};
               }});
  routes.push_back({
      .method = "GET",
      .path = "/metrics",
      .operation_id = "getMetrics",
      .tag = &kSystemTag,
      .summary = "Prometheus metrics: jobs by state, bytes moved, throughput, pass phases, exports, poller errors",
      .description = "Prometheus text exposition: oma_jobs by state, oma_bytes_moved_total, "
                     "oma_throughput_bytes_per_second, oma_exports, oma_poller_errors_total, oma_vma_tunnels by "
                     "state and oma_export_server_restarts_total.",
      .role = "viewer",
      .responses = {{.status = 200, .description = "the metrics", .media_type = "text/plain; version=0.0.4",
                     .text_example = kMetricsExample}},
      .handler = [&repos, &jobs, &exports, pairing](auto&, auto&, auto&) -> Reply {
                 return {200, nullptr, metrics(repos, jobs, exports, pairing)};
               }});
  return routes;
}

}  // namespace mk::oma::api
