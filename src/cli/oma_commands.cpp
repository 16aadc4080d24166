// Operator commands over the OMA's REST API: `migratekit vms`, `migratekit replicate
// VM`, `migratekit jobs [list|show|watch|cancel]`, `migratekit cutover VM`,
// `migratekit test-failover VM [--cleanup]`, `migratekit boot-check VM`, `migratekit inspect
// VM`, `migratekit nodes
// [drain|activate NODE]`, `migratekit move VM NODE` (several OMA nodes). They hold no state of their own:
// every answer comes from the API, so the CLI, the GUI and scripts agree.
//
// The API token is read from a file (--token-file, $MIGRATEKIT_TOKEN_FILE, default
// /var/lib/oma/admin.token), never taken on the command line where `ps` would show it.
// Over https:// the OMA's certificate is checked by its pinned SHA-256 fingerprint
// (--fingerprint, $MIGRATEKIT_API_FINGERPRINT; the OMA logs it) or by a CA file
// (--ca-file, $MIGRATEKIT_CA_FILE), else by the system's CAs.
#include <fmt/format.h>
#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/commands.h"
#include "common/error.h"
#include "common/tls.h"
#include "common/units.h"

namespace mk::cli {
namespace {

using nlohmann::json;

struct OmaArgs {
  std::string api, token_file, fingerprint, ca_file;
  std::string vm, job, status, node, screenshot;
  bool incremental = false, watch = false, json_out = false, cleanup = false, no_wait = false;
  int interval_ms = 1000;
  int shutdown_timeout_s = 300;
};

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

class Api {
 public:
  explicit Api(const OmaArgs& a) : base_(a.api), client_(a.api) {
    if (!a.fingerprint.empty() || !a.ca_file.empty()) {
      if (a.api.rfind("https://", 0) != 0)
        throw UsageError(fmt::format("--fingerprint and --ca-file are for an https:// --api, not {}", a.api));
      tls::apply_client_trust(client_, {a.fingerprint.empty() ? "" : tls::normalize_fingerprint(a.fingerprint, "--fingerprint"),
                                        a.ca_file});
      pinned_ = !a.fingerprint.empty();
    }
    std::ifstream in(a.token_file);
    std::getline(in, token_);
    if (token_.empty()) {
      throw UsageError(fmt::format("no API token in {}: give --token-file (the first admin token is in the OMA's "
                                   "data directory, admin.token)",
                                   a.token_file));
    }
    // One connection for all calls (`jobs watch` polls): over HTTPS a new connection per
    // call would be a TLS handshake per call.
    client_.set_keep_alive(true);
    client_.set_connection_timeout(std::chrono::seconds(5));
    client_.set_read_timeout(std::chrono::seconds(30));
  }
  json call(const std::string& method, const std::string& path, const json& body = nullptr) {
    httplib::Headers h = {{"Authorization", "Bearer " + token_}};
    auto r = method == "GET" ? client_.Get(path.c_str(), h) : client_.Post(path.c_str(), h, body.is_null() ? "" : body.dump(), "application/json");
    if (!r && (r.error() == httplib::Error::SSLConnection || r.error() == httplib::Error::SSLServerVerification))
      throw Error(fmt::format("no trusted HTTPS connection to the OMA API at {}: {}", base_,
                              pinned_ ? "its certificate does not have the --fingerprint given (or it does not speak "
                                        "HTTPS)"
                                      : "its certificate is not trusted: give --fingerprint (the OMA logs its "
                                        "certificate's) or --ca-file"));
    if (!r) throw Error(fmt::format("cannot reach the OMA API at {}: {} (is the OMA running? --api)", base_, httplib::to_string(r.error())));
    json j = json::parse(r->body, nullptr, false);
    if (r->status >= 400) {
      std::string msg = j.is_object() && j.contains("error") ? j["error"].get<std::string>() : r->body.substr(0, 200);
      if (r->status == 400 || r->status == 404 || r->status == 409) throw UsageError(msg);
      throw Error(fmt::format("OMA API {} {}: HTTP {}: {}", method, path, r->status, msg));
    }
    if (j.is_discarded()) throw Error(fmt::format("OMA API {} {}: the answer is not JSON", method, path));
    return j;
  }

 private:
  std::string base_, token_;
  bool pinned_ = false;
  httplib::Client client_;
};

std::string pct(const json& j) { return fmt::format("{:5.1f}%", j.value("percent", 0.0)); }

std::string rate(double bps) { return format_bytes(static_cast<uint64_t>(bps)) + "/s"; }

std::string eta(double s) {
  if (s <= 0) return "-";
  int t = static_cast<int>(s);
  return t >= 3600 ? fmt::format("{}h{:02}m", t / 3600, t / 60 % 60) : fmt::format("{}m{:02}s", t / 60, t % 60);
}

std::string bar(int64_t done, int64_t total, int width) {
  int filled = total > 0 ? static_cast<int>(static_cast<double>(done) / static_cast<double>(total) * width) : 0;
  filled = std::clamp(filled, 0, width);
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

int run_vms(const OmaArgs& a) {
  Api api(a);
  json vms = api.call("GET", "/api/v1/vms")["vms"];
  if (a.json_out) {
    std::printf("%s\n", vms.dump(2).c_str());
    return 0;
  }
  std::printf("%-36s  %-24s  %-20s  %s\n", "VM", "NAME", "STATUS", "CURRENT JOB");
  for (const auto& v : vms) {
    std::printf("%-36s  %-24s  %-20s  %s\n", v["vm_id"].get<std::string>().c_str(),
                v["name"].get<std::string>().substr(0, 24).c_str(), v["status"].get<std::string>().c_str(),
                v["current_job_id"].is_null() ? "-" : v["current_job_id"].get<std::string>().c_str());
  }
  return 0;
}

int watch(Api& api, const OmaArgs& a, const std::string& job_id) {
  bool tty = isatty(STDOUT_FILENO);
  int drawn = 0;
  std::string last_line;
  for (;;) {
    json j = api.call("GET", "/api/v1/jobs/" + job_id + "/progress");
    std::vector<std::string> lines;
    lines.push_back(fmt::format("job {} {} {}: {} {} {} of {}  {}  ETA {}", job_id.substr(0, 8), j["kind"].get<std::string>(),
                                j["status"].get<std::string>(), bar(j["bytes_done"], j["bytes_total"], 30), pct(j),
                                format_bytes(j["bytes_done"]), format_bytes(j["bytes_total"]), rate(j["throughput_bps"]),
                                eta(j["eta_seconds"])));
    for (const auto& d : j["disks"]) {
      double p = d["bytes_total"].get<int64_t>() > 0
                     ? 100.0 * d["bytes_done"].get<double>() / d["bytes_total"].get<double>() : 0;
      lines.push_back(fmt::format("  disk {} (unit {}) {:<10} {} {:5.1f}%  {}", d["disk_key"].get<std::string>(),
                                  d["unit"].get<int>(), d["status"].get<std::string>(),
                                  bar(d["bytes_done"], d["bytes_total"], 20), p, rate(d["throughput_bps"])));
    }
    if (tty) {
      if (drawn) std::printf("\033[%dA", drawn);
      for (const auto& l : lines) std::printf("\r\033[K%s\n", l.c_str());
      drawn = static_cast<int>(lines.size());
    } else if (lines[0] != last_line) {
      std::printf("%s\n", lines[0].c_str());  // one line per change in a log or pipe
      last_line = lines[0];
    }
    std::fflush(stdout);
    std::string status = j["status"];
    if (status == "completed") return 0;
    if (status == "failed" || status == "cancelled") {
      std::fprintf(stderr, "migratekit: job %s %s: %s\n", job_id.c_str(), status.c_str(),
                   j["error"].is_null() ? "" : j["error"].get<std::string>().c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(a.interval_ms));
  }
}

int run_replicate(const OmaArgs& a) {
  Api api(a);
  json j = api.call("POST", "/api/v1/jobs", {{"vm_id", a.vm}, {"kind", a.incremental ? "incremental" : "full"}});
  std::string id = j["job_id"];
  std::printf("%s\n", id.c_str());
  std::fflush(stdout);
  return a.watch ? watch(api, a, id) : 0;
}

// A cutover or test failover: one line per step as it starts and ends, until the job
// ends (exit 1 unless it completed).
int watch_steps(Api& api, const OmaArgs& a, const std::string& job_id) {
  std::map<int64_t, std::string> shown;  // step seq -> last status printed
  for (;;) {
    json j = api.call("GET", "/api/v1/jobs/" + job_id);
    for (const auto& st : j["steps"]) {
      std::string status = st["status"];
      int64_t seq = st["seq"];
      if (shown[seq] == status) continue;
      shown[seq] = status;
      std::string msg = st["message"].is_null() ? "" : ": " + st["message"].get<std::string>();
      std::printf("%-22s %s%s\n", st["name"].get<std::string>().c_str(), status.c_str(), msg.c_str());
    }
    std::fflush(stdout);
    std::string status = j["status"];
    if (status == "completed") return 0;
    if (status == "failed" || status == "cancelled") {
      std::fprintf(stderr, "migratekit: %s %s %s: %s\n", j["kind"].get<std::string>().c_str(), job_id.c_str(),
                   status.c_str(), j["error"].is_null() ? "" : j["error"].get<std::string>().c_str());
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(a.interval_ms));
  }
}

int run_cutover(const OmaArgs& a) {
  Api api(a);
  json j = api.call("POST", "/api/v1/vms/" + a.vm + "/cutover", {{"shutdown_timeout_seconds", a.shutdown_timeout_s}});
  std::string id = j["job_id"];
  std::printf("%s\n", id.c_str());
  std::fflush(stdout);
  return a.watch ? watch_steps(api, a, id) : 0;
}

int run_test_failover(const OmaArgs& a) {
  Api api(a);
  json j = api.call("POST", "/api/v1/vms/" + a.vm + (a.cleanup ? "/test-failover/cleanup" : "/test-failover"));
  std::string id = j["job_id"];
  std::printf("%s\n", id.c_str());
  std::fflush(stdout);
  return a.watch ? watch_steps(api, a, id) : 0;
}

// Standard base64 (the API's screenshot_base64); throws UsageError on anything else.
std::string from_base64(const std::string& in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t bits = 0;
  int count = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = value(c);
    if (v < 0) throw Error("the OMA sent a screenshot that is not base64");
    bits = (bits << 6) | static_cast<uint32_t>(v);
    count += 6;
    if (count >= 8) {
      count -= 8;
      out += static_cast<char>((bits >> count) & 0xff);
    }
  }
  return out;
}

// A boot check: its steps as they run, then the result (exit 0 only when the guest booted).
int run_boot_check(const OmaArgs& a) {
  Api api(a);
  json j = api.call("POST", "/api/v1/vms/" + a.vm + "/boot-check");
  std::string id = j["job_id"];
  std::printf("%s\n", id.c_str());
  std::fflush(stdout);
  if (a.no_wait) return 0;
  const int steps = watch_steps(api, a, id);
  json r = api.call("GET", "/api/v1/vms/" + a.vm + "/boot-check");
  if (r.value("job_id", "") != id) {
    std::fprintf(stderr, "migratekit: boot check %s stored no result (see GET /api/v1/jobs/%s)\n", id.c_str(),
                 id.c_str());
    return 1;
  }
  if (!a.screenshot.empty() && r["screenshot_base64"].is_string()) {
    std::ofstream out(a.screenshot, std::ios::binary | std::ios::trunc);
    out << from_base64(r["screenshot_base64"].get<std::string>());
    if (!out) throw Error(fmt::format("cannot write the screenshot to {}", a.screenshot));
  }
  if (a.json_out) {
    std::printf("%s\n", r.dump(2).c_str());
    return r.value("booted", false) ? 0 : 1;
  }
  const bool booted = r.value("booted", false);
  std::printf("booted:      %s\n", booted ? "yes" : "NO");
  std::printf("evidence:    %s\n", r.value("reason", "").c_str());
  std::printf("guest:       %s\n", r.value("os", "").c_str());
  std::printf("conversion:  %.0f s\nboot:        %.0f s (%s)\n", r.value("conversion_seconds", 0.0),
              r.value("boot_seconds", 0.0), r.value("accel", "").c_str());
  if (!a.screenshot.empty()) {
    std::printf("screenshot:  %s\n", r["screenshot_base64"].is_string() ? a.screenshot.c_str() : "(none taken)");
  }
  std::printf("serial console (last 4 KiB):\n%s\n", r.value("console_tail", "").c_str());
  std::fflush(stdout);
  return booted && steps == 0 ? 0 : 1;
}

// An inspection: its step as it runs, then the result (exit 0 only when the guest can be
// converted).
int run_inspect(const OmaArgs& a) {
  Api api(a);
  json j = api.call("POST", "/api/v1/vms/" + a.vm + "/inspection");
  std::string id = j["job_id"];
  std::printf("%s\n", id.c_str());
  std::fflush(stdout);
  if (a.no_wait) return 0;
  const int steps = watch_steps(api, a, id);
  json r = api.call("GET", "/api/v1/vms/" + a.vm + "/inspection");
  if (r.value("job_id", "") != id) {
    std::fprintf(stderr, "migratekit: inspection %s stored no result (see GET /api/v1/jobs/%s)\n", id.c_str(),
                 id.c_str());
    return 1;
  }
  const bool convertible = r.value("convertible", false);
  if (a.json_out) {
    std::printf("%s\n", r.dump(2).c_str());
    return convertible ? 0 : 1;
  }
  auto text = [&](const char* key) {
    return r[key].is_string() ? r[key].get<std::string>() : r[key].is_null() ? std::string("-") : r[key].dump();
  };
  std::printf("convertible: %s\n", convertible ? "yes" : "NO");
  if (!convertible) std::printf("reason:      %s\n", text("reason").c_str());
  std::printf("guest:       %s %s (%s)\n", text("distro").c_str(), text("version").c_str(), text("os_family").c_str());
  std::printf("product:     %s\n", text("product_name").c_str());
  std::printf("root:        %s on disk %s (key %s)\n", text("root_device").c_str(), text("boot_disk").c_str(),
              text("boot_disk_key").c_str());
  std::printf("firmware:    %s on the disks, %s in vSphere%s\n", text("firmware").c_str(),
              text("vsphere_firmware").c_str(), r.value("vsphere_secure_boot", false) ? " (secure boot)" : "");
  std::printf("inspection:  %.0f s\n", r.value("seconds", 0.0));
  std::fflush(stdout);
  return convertible && steps == 0 ? 0 : 1;
}

int run_jobs(const OmaArgs& a, const std::string& action) {
  Api api(a);
  if (action == "list") {
    std::string q = a.vm.empty() ? "" : "?vm_id=" + a.vm;
    if (!a.status.empty()) q += (q.empty() ? "?" : "&") + std::string("status=") + a.status;
    json jobs = api.call("GET", "/api/v1/jobs" + q)["jobs"];
    if (a.json_out) {
      std::printf("%s\n", jobs.dump(2).c_str());
      return 0;
    }
    std::printf("%-36s  %-36s  %-11s  %-10s  %s\n", "JOB", "VM", "KIND", "STATUS", "PROGRESS");
    for (const auto& j : jobs) {
      std::printf("%-36s  %-36s  %-11s  %-10s  %s\n", j["job_id"].get<std::string>().c_str(),
                  j["vm_id"].get<std::string>().c_str(), j["kind"].get<std::string>().c_str(),
                  j["status"].get<std::string>().c_str(), pct(j).c_str());
    }
    return 0;
  }
  if (action == "show") {
    std::printf("%s\n", api.call("GET", "/api/v1/jobs/" + a.job).dump(2).c_str());
    return 0;
  }
  if (action == "watch") return watch(api, a, a.job);
  json j = api.call("POST", "/api/v1/jobs/" + a.job + "/cancel");
  std::printf("cancellation requested for job %s (status %s)\n", a.job.c_str(), j["status"].get<std::string>().c_str());
  return 0;
}

// The OMA nodes, their leases and use, then the VMs waiting for a node; or an operator's
// drain/activate of one node.
int run_nodes(const OmaArgs& a, const std::string& action) {
  Api api(a);
  if (!action.empty()) {
    json n = api.call("POST", "/api/v1/nodes/" + a.node + "/" + action);
    std::printf("node %s is %s\n", n["node_id"].get<std::string>().c_str(), n["state"].get<std::string>().c_str());
    return 0;
  }
  json j = api.call("GET", "/api/v1/nodes");
  if (a.json_out) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("%-20s  %-8s  %-8s  %-9s  %-4s  %s\n", "NODE", "STATE", "LEASE", "SLOTS", "VMS", "NBD");
  for (const auto& n : j["nodes"]) {
    std::printf("%-20s  %-8s  %-8s  %4lld/%-4lld  %-4lld  %s:%lld\n", n["node_id"].get<std::string>().c_str(),
                n["state"].get<std::string>().c_str(), n["lease"].get<std::string>().c_str(),
                static_cast<long long>(n["slots_used"].get<int64_t>()),
                static_cast<long long>(n["volume_slots"].get<int64_t>()), static_cast<long long>(n["vms"].get<int64_t>()),
                n["nbd_host"].get<std::string>().c_str(), static_cast<long long>(n["nbd_port"].get<int64_t>()));
  }
  for (const auto& q : j["queue"]) {
    std::printf("waiting: %s  %s\n", q["vm_id"].get<std::string>().c_str(),
                q["waiting_reason"].is_string() ? q["waiting_reason"].get<std::string>().c_str() : "");
  }
  return 0;
}

int run_move(const OmaArgs& a) {
  Api api(a);
  json p = api.call("POST", "/api/v1/vms/" + a.vm + "/move", {{"node_id", a.node}});
  std::printf("VM %s moves from node %s to node %s at its next pass\n", a.vm.c_str(),
              p["node_id"].is_string() ? p["node_id"].get<std::string>().c_str() : "-", a.node.c_str());
  return 0;
}

void common_options(CLI::App* c, OmaArgs& a) {
  c->add_option("--api", a.api, "OMA API URL (default $MIGRATEKIT_API or http://127.0.0.1:8082)");
  c->add_option("--fingerprint", a.fingerprint,
                "https: the OMA certificate's SHA-256 fingerprint to pin (default $MIGRATEKIT_API_FINGERPRINT)");
  c->add_option("--ca-file", a.ca_file, "https: CA certificates (PEM) to verify the OMA with (default $MIGRATEKIT_CA_FILE)");
  c->add_option("--token-file", a.token_file,
                "File holding the API token (default $MIGRATEKIT_TOKEN_FILE or /var/lib/oma/admin.token)");
}

}  // namespace

Runner add_oma_commands(CLI::App& app) {
  auto a = std::make_shared<OmaArgs>();
  a->api = env_or("MIGRATEKIT_API", "http://127.0.0.1:8082");
  a->token_file = env_or("MIGRATEKIT_TOKEN_FILE", "/var/lib/oma/admin.token");
  a->fingerprint = env_or("MIGRATEKIT_API_FINGERPRINT", "");
  a->ca_file = env_or("MIGRATEKIT_CA_FILE", "");

  CLI::App* vms = app.add_subcommand("vms", "List the VMs the OMA knows");
  common_options(vms, *a);
  vms->add_flag("--json", a->json_out, "Print the API's JSON");

  CLI::App* rep = app.add_subcommand("replicate", "Start replicating a VM (full unless --incremental)");
  common_options(rep, *a);
  rep->add_option("VM", a->vm, "VM UUID")->required();
  rep->add_flag("--incremental", a->incremental, "Copy only what changed since the last committed pass");
  rep->add_flag("--watch", a->watch, "Show live progress until the job ends (exit 1 unless it completes)");
  rep->add_option("--interval-ms", a->interval_ms, "Refresh interval for --watch (default 1000)")->check(CLI::Range(50, 60000));

  CLI::App* jobs = app.add_subcommand("jobs", "List, show, watch or cancel replication jobs");
  jobs->require_subcommand(1);
  auto list = jobs->add_subcommand("list", "List jobs");
  common_options(list, *a);
  list->add_option("--vm", a->vm, "Only this VM's jobs");
  list->add_option("--status", a->status, "Only jobs in this state");
  list->add_flag("--json", a->json_out, "Print the API's JSON");
  for (const char* name : {"show", "watch", "cancel"}) {
    auto c = jobs->add_subcommand(name, std::string(name) == "show"    ? "Show a job with its disks, steps and events"
                                        : std::string(name) == "watch" ? "Live progress until the job ends"
                                                                       : "Cancel an active job");
    common_options(c, *a);
    c->add_option("JOB", a->job, "Job id")->required();
    if (std::string(name) == "watch")
      c->add_option("--interval-ms", a->interval_ms, "Refresh interval (default 1000)")->check(CLI::Range(50, 60000));
  }

  CLI::App* cut = app.add_subcommand("cutover", "Cut a replicated VM over: shut the source down, copy the last "
                                                 "changes, build and start the VM in CloudStack");
  common_options(cut, *a);
  cut->add_option("VM", a->vm, "VM UUID")->required();
  cut->add_option("--shutdown-timeout", a->shutdown_timeout_s,
                  "Seconds for the guest to shut down before it is powered off (default 300)")
      ->check(CLI::Range(1, 86400));
  cut->add_flag("--watch", a->watch, "Show each step until the cutover ends (exit 1 unless it completes)");
  cut->add_option("--interval-ms", a->interval_ms, "Refresh interval for --watch (default 1000)")->check(CLI::Range(50, 60000));

  CLI::App* tf = app.add_subcommand("test-failover", "Boot a copy of a replicated VM on the test network (the "
                                                     "source keeps running), or --cleanup to remove it");
  common_options(tf, *a);
  tf->add_option("VM", a->vm, "VM UUID")->required();
  tf->add_flag("--cleanup", a->cleanup, "Destroy the test VM, revert the volumes and resume replication");
  tf->add_flag("--watch", a->watch, "Show each step until the job ends (exit 1 unless it completes)");
  tf->add_option("--interval-ms", a->interval_ms, "Refresh interval for --watch (default 1000)")->check(CLI::Range(50, 60000));

  CLI::App* bc = app.add_subcommand("boot-check", "Prove a replicated VM boots on KVM before its cutover: overlays of "
                                                   "its replicas converted and booted in a throwaway VM (the "
                                                   "replicas are never written); waits and prints the result");
  common_options(bc, *a);
  bc->add_option("VM", a->vm, "VM UUID")->required();
  bc->add_flag("--no-wait", a->no_wait, "Print the job's id and return at once");
  bc->add_option("--screenshot", a->screenshot, "Write the picture of the VGA console to this file (PNG)");
  bc->add_flag("--json", a->json_out, "Print the API's JSON of the result (with the screenshot in base64)");
  bc->add_option("--interval-ms", a->interval_ms, "Refresh interval (default 1000)")->check(CLI::Range(50, 60000));

  CLI::App* in = app.add_subcommand("inspect", "Inspect a replicated VM's guest, read-only: OS, boot disk, firmware "
                                                "and whether it can be converted for KVM; waits and prints the result "
                                                "(exit 1 when it cannot be converted)");
  common_options(in, *a);
  in->add_option("VM", a->vm, "VM UUID")->required();
  in->add_flag("--no-wait", a->no_wait, "Print the job's id and return at once");
  in->add_flag("--json", a->json_out, "Print the API's JSON of the result");
  in->add_option("--interval-ms", a->interval_ms, "Refresh interval (default 1000)")->check(CLI::Range(50, 60000));

  // A node id goes into a URL path: nothing there but what a node id may hold.
  CLI::Validator node_id(
      [](std::string& v) -> std::string {
        bool ok = !v.empty() && v.size() <= 64 && v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") == std::string::npos;
        return ok ? "" : "expected a node id (1 to 64 of a-z, 0-9, '.', '_', '-')";
      },
      "NODE");
  CLI::App* nodes = app.add_subcommand("nodes", "List the OMA nodes sharing the database (or drain/activate one)");
  common_options(nodes, *a);
  nodes->add_flag("--json", a->json_out, "Print the API's JSON");
  for (const char* name : {"drain", "activate"}) {
    auto c = nodes->add_subcommand(name, std::string(name) == "drain"
                                             ? "Take no new VMs on a node (its VMs move at their next pass)"
                                             : "Let a drained node take new VMs again");
    common_options(c, *a);
    c->add_option("NODE", a->node, "Node id")->required()->check(node_id);
  }
  CLI::App* move = app.add_subcommand("move", "Move a VM's volumes to another OMA node at its next pass");
  common_options(move, *a);
  move->add_option("VM", a->vm, "VM UUID")->required();
  move->add_option("NODE", a->node, "Node id")->required()->check(node_id);

  return [a, vms, rep, jobs, cut, tf, bc, in, nodes, move]() -> int {
    if (nodes->parsed()) {
      for (const char* name : {"drain", "activate"})
        if (nodes->got_subcommand(name)) return run_nodes(*a, name);
      return run_nodes(*a, "");
    }
    if (move->parsed()) return run_move(*a);
    if (vms->parsed()) return run_vms(*a);
    if (rep->parsed()) return run_replicate(*a);
    if (cut->parsed()) return run_cutover(*a);
    if (tf->parsed()) return run_test_failover(*a);
    if (bc->parsed()) return run_boot_check(*a);
    if (in->parsed()) return run_inspect(*a);
    if (jobs->parsed()) {
      for (const char* name : {"list", "show", "watch", "cancel"})
        if (jobs->got_subcommand(name)) return run_jobs(*a, name);
    }
    return -1;  // not one of these commands
  };
}

}  // namespace mk::cli
