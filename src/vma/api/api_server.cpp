#include "vma/api/api_server.h"

#include <fmt/format.h>

#include "common/log.h"
#include "vma/api/requests.h"

namespace mk::vma::api {
namespace {

using nlohmann::json;

// An answer with a status other than 200 and an error message.
struct Failure {
  int status;
  std::string message;
};

json error_body(const std::string& message, const std::string& field = "") {
  json j = {{"error", message}};
  if (!field.empty()) j["field"] = field;
  return j;
}

bool equal_constant_time(const std::string& a, const std::string& b) {
  if (a.size() != b.size() || b.empty()) return false;  // a token's length is not its secret
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

json findings_json(const std::vector<PreflightFinding>& findings) {
  json out = json::array();
  for (const auto& f : findings) {
    out.push_back({{"code", f.code},
                   {"disk_key", f.disk_key.empty() ? json(nullptr) : json(f.disk_key)},
                   {"problem", f.problem},
                   {"remedy", f.remedy},
                   {"text", f.text}});
  }
  return out;
}

}  // namespace

ApiServer::ApiServer(ApiOptions options, JobRunner& runner, VCenter& vcenter, TunnelStateProvider tunnel)
    : options_(std::move(options)), runner_(runner), vcenter_(vcenter), tunnel_(std::move(tunnel)) {
  if (options_.token.empty()) throw UsageError("the VMA API needs a token (the one the OMA issued at pairing)");
  if (!tunnel_) {
    tunnel_ = [] { return TunnelState{"down", 0, std::string("no tunnel configured")}; };
  }
}

ApiServer::~ApiServer() { stop(); }

bool ApiServer::authorized(const httplib::Request& req) const {
  std::string h = req.get_header_value("Authorization");
  const std::string prefix = "Bearer ";
  if (!h.starts_with(prefix)) return false;
  return equal_constant_time(h.substr(prefix.size()), options_.token);
}

ApiServer::Handler ApiServer::guarded(std::function<json(const httplib::Request&, httplib::Response&)> handler) {
  return [this, handler](const httplib::Request& req, httplib::Response& res) {
    json body;
    res.status = 200;
    try {
      body = handler(req, res);
    } catch (const BadRequest& e) {
      res.status = 400;
      body = error_body(e.what(), e.field());
    } catch (const Failure& f) {
      res.status = f.status;
      body = error_body(f.message);
    } catch (const VmNotFound& e) {
      res.status = 404;
      body = error_body(e.what());
    } catch (const JobConflict& e) {
      res.status = 423;
      body = error_body(e.what());
    } catch (const ShuttingDown& e) {
      res.status = 503;
      body = error_body(e.what());
    } catch (const std::exception& e) {
      res.status = 500;
      body = error_body(e.what());
    }
    if (res.status >= 500) log::error("{} {}: {}", req.method, req.path, body.value("error", ""));
    res.set_content(body.dump(), "application/json");
  };
}

void ApiServer::start() {
  server_.new_task_queue = [n = options_.threads] { return new httplib::ThreadPool(n); };
  server_.set_payload_max_length(options_.max_body_bytes);
  server_.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (authorized(req)) return httplib::Server::HandlerResponse::Unhandled;
    res.status = 401;
    res.set_header("WWW-Authenticate", "Bearer");
    res.set_content(error_body("missing or wrong bearer token: use the token the OMA issued at pairing").dump(),
                    "application/json");
    return httplib::Server::HandlerResponse::Handled;
  });
  server_.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string message = res.status == 404   ? fmt::format("no route {} {}", req.method, req.path)
                          : res.status == 413 ? "request body too large"
                                              : fmt::format("HTTP {}", res.status);
    res.set_content(error_body(message).dump(), "application/json");
  });
  auto bind = [this](auto fn) { return guarded([this, fn](const auto& q, auto& r) { return (this->*fn)(q, r); }); };
  server_.Post("/api/v1/replicate", bind(&ApiServer::replicate));
  server_.Get(R"(/api/v1/progress/([^/]+))", bind(&ApiServer::progress));
  server_.Post(R"(/api/v1/stop/([^/]+))", bind(&ApiServer::stop_job));
  server_.Post(R"(/api/v1/cleanup/([^/]+))", bind(&ApiServer::cleanup));
  server_.Post(R"(/api/v1/power/([^/]+))", bind(&ApiServer::power));
  server_.Get("/api/v1/discover", bind(&ApiServer::discover));
  server_.Get(R"(/api/v1/preflight/([^/]+))", bind(&ApiServer::preflight));
  server_.Get("/api/v1/health", bind(&ApiServer::health));

  if (options_.port == 0) {
    port_ = server_.bind_to_any_port(options_.listen_address);
  } else {
    port_ = server_.bind_to_port(options_.listen_address, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    throw Error(fmt::format("the VMA API cannot listen on {}:{} (in use, or not an address of this machine)",
                            options_.listen_address, options_.port));
  }
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  log::info("VMA API listening on {}:{} (instance {})", options_.listen_address, port_, options_.instance);
}

void ApiServer::stop() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

json ApiServer::replicate(const httplib::Request& req, httplib::Response& res) {
  JobState job = parse_replicate(parse_body(req.body));
  if (auto known = runner_.get(job.job_id)) {
    if (known->vm_id != job.vm_id) {
      throw Failure{409, fmt::format("job {} is already known for VM {}, not VM {}", job.job_id, known->vm_id,
                                     job.vm_id)};
    }
  } else {
    runner_.submit(job);  // a second identical request meanwhile returns false: same answer
  }
  res.status = 202;
  return {{"job_id", job.job_id}, {"vma_instance", options_.instance}};
}

json ApiServer::progress(const httplib::Request& req, httplib::Response&) {
  std::string job_id = req.matches[1];
  check_uuid_param(job_id, "job_id");
  auto job = runner_.get(job_id);
  if (!job) throw Failure{404, fmt::format("no job {} on this VMA (never started here, or its record expired)", job_id)};
  json disks = json::array();
  int64_t done = 0, total = 0;
  double throughput = 0;
  for (const auto& d : job->disks) {
    disks.push_back(progress_json(d));
    done += d.bytes_done;
    total += d.bytes_total;
    if (d.status == "copying") throughput += d.throughput_bps;
  }
  // Beyond the protocol's fields (the OMA ignores them): the job as a whole.
  return {{"job_id", job_id},
          {"vma_instance", options_.instance},
          {"disks", disks},
          {"status", job->status},
          {"error", job->error ? json(*job->error) : json(nullptr)},
          {"total", {{"bytes_done", done}, {"bytes_total", total}, {"throughput_bps", throughput}}}};
}

json ApiServer::stop_job(const httplib::Request& req, httplib::Response&) {
  std::string job_id = req.matches[1];
  check_uuid_param(job_id, "job_id");
  if (!runner_.stop(job_id)) throw Failure{404, fmt::format("no job {} on this VMA", job_id)};
  return {{"job_id", job_id}, {"stopped", true}};
}

json ApiServer::cleanup(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  check_uuid_param(vm_id, "vm_id");
  if (auto job = runner_.copying_job_of(vm_id)) {
    throw JobConflict(fmt::format("VM {} has job {} copying: its snapshot is in use; stop the job first", vm_id, *job));
  }
  auto lock = runner_.lock_vm(vm_id);  // waits for a pass that is still closing
  int n = 0;
  try {
    n = vcenter_.remove_our_snapshots(vm_id);
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: removing our snapshots failed: {}; try again", vm_id, e.what())};
  }
  return {{"vm_id", vm_id}, {"snapshots_removed", n}};
}

json ApiServer::power(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  check_uuid_param(vm_id, "vm_id");
  PowerRequest p = parse_power(parse_body(req.body));
  PowerOutcome out;
  try {
    out = vcenter_.power(vm_id, p.action, std::chrono::seconds(p.timeout_seconds));
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: power {} failed: {}", vm_id, p.action, e.what())};
  }
  return {{"vm_id", vm_id}, {"power_state", out.power_state}, {"forced", out.forced}};
}

json ApiServer::preflight(const httplib::Request& req, httplib::Response&) {
  std::string vm_id = req.matches[1];
  check_uuid_param(vm_id, "vm_id");
  std::vector<PreflightFinding> findings;
  try {
    findings = vcenter_.preflight(vm_id);
  } catch (const VmNotFound&) {
    throw;
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("VM {}: preflight failed: {}", vm_id, e.what())};
  }
  return {{"vm_id", vm_id}, {"findings", findings_json(findings)}};
}

json ApiServer::discover(const httplib::Request&, httplib::Response&) {
  std::vector<DiscoveredVm> vms;
  try {
    vms = vcenter_.discover();
  } catch (const std::exception& e) {
    throw Failure{502, fmt::format("discovery failed: {}", e.what())};
  }
  json out = json::array();
  for (const auto& vm : vms) {
    json disks = json::array(), nics = json::array();
    for (const auto& d : vm.disks) {
      disks.push_back({{"disk_key", d.disk_key}, {"unit", d.unit}, {"label", d.label},
                       {"capacity_bytes", d.capacity_bytes}});
    }
    for (const auto& n : vm.nics) nics.push_back({{"key", n.key}, {"mac", n.mac}, {"network", n.network}});
    out.push_back({{"vm_id", vm.vm_id}, {"name", vm.name}, {"datacenter", vm.datacenter},
                   {"power_state", vm.power_state}, {"cpus", vm.cpus}, {"memory_mb", vm.memory_mb},
                   {"guest_os", vm.guest_os}, {"disks", disks}, {"nics", nics},
                   {"findings", findings_json(vm.findings)}});
  }
  return {{"vcenter", vcenter_.host()}, {"vms", out}};
}

json ApiServer::health(const httplib::Request&, httplib::Response&) {
  std::string vc_error = vcenter_.check();
  TunnelState t = tunnel_();
  bool ok = vc_error.empty() && t.state == "up";
  return {{"status", ok ? "ok" : "degraded"},
          {"vma_instance", options_.instance},
          {"vcenter", {{"reachable", vc_error.empty()}, {"error", vc_error.empty() ? json(nullptr) : json(vc_error)}}},
          {"tunnel", {{"state", t.state}, {"since", t.since}, {"error", t.error ? json(*t.error) : json(nullptr)}}}};
}

}  // namespace mk::vma::api
