#include "fake_vma.h"

#include <fmt/format.h>

#include <fstream>
#include <set>
#include <sstream>

#include "common/error.h"
#include "oma/names.h"
#include "support/migratekit_runner.h"

namespace mk::oma::test {

using nlohmann::json;

FakeVma::FakeVma(std::string psk_file) : psk_(std::move(psk_file)), instance_(new_uuid()) {
  server_.Post("/api/v1/replicate", [this](const auto& req, auto& res) { handle_replicate(req, res); });
  server_.Get(R"(/api/v1/progress/([^/]+))", [this](const auto& req, auto& res) { handle_progress(req, res); });
  server_.Post(R"(/api/v1/stop/([^/]+))", [this](const auto& req, auto& res) { handle_stop(req, res); });
  server_.Post(R"(/api/v1/power/([^/]+))", [this](const auto& req, auto& res) { handle_power(req, res); });
  server_.Post(R"(/api/v1/cleanup/([^/]+))", [this](const auto& req, auto& res) { handle_cleanup(req, res); });
  server_.Get("/api/v1/discover", [this](const auto& req, auto& res) { handle_discover(req, res); });
  server_.Get(R"(/api/v1/preflight/([^/]+))", [this](const auto& req, auto& res) { handle_preflight(req, res); });
  port_ = server_.bind_to_any_port("127.0.0.1");
  if (port_ <= 0) throw mk::Error("fake VMA: cannot bind 127.0.0.1");
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

FakeVma::~FakeVma() {
  go_silent();
  std::lock_guard lock(mu_);
  jobs_.clear();  // stops copies by PID
}

void FakeVma::go_silent() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

void FakeVma::set_source(const std::string& disk_key, const std::string& uri) {
  std::lock_guard lock(mu_);
  sources_[disk_key] = uri;
}

void FakeVma::set_disk(const std::string& job_id, const std::string& disk_key, const json& progress) {
  std::lock_guard lock(mu_);
  for (auto& d : jobs_.at(job_id).disks) if (d->key == disk_key) d->scripted = progress;
}

void FakeVma::restart() {
  std::lock_guard lock(mu_);
  jobs_.clear();
  instance_ = new_uuid();
}

void FakeVma::forget(const std::string& job_id) {
  std::lock_guard lock(mu_);
  jobs_.erase(job_id);
}

std::vector<std::string> FakeVma::violations() {
  std::lock_guard lock(mu_);
  return violations_;
}
std::vector<json> FakeVma::replicate_requests() {
  std::lock_guard lock(mu_);
  return requests_;
}
std::vector<std::string> FakeVma::stopped_jobs() {
  std::lock_guard lock(mu_);
  return stopped_;
}
bool FakeVma::knows(const std::string& job_id) {
  std::lock_guard lock(mu_);
  return jobs_.count(job_id) > 0;
}

// The protocol, checked field by field. Returns "" or what is wrong.
std::string FakeVma::check_request(const json& j) {
  auto keys = [](const json& o) {
    std::set<std::string> k;
    for (auto it = o.begin(); it != o.end(); ++it) k.insert(it.key());
    return k;
  };
  if (!j.is_object()) return "body is not an object";
  if (keys(j) != std::set<std::string>{"job_id", "vm_id", "kind", "nbd", "disks"}) return "top-level fields differ";
  if (!j["job_id"].is_string() || !is_uuid(j["job_id"].get<std::string>())) return "job_id";
  if (!j["vm_id"].is_string() || !is_uuid(j["vm_id"].get<std::string>())) return "vm_id";
  std::string kind = j["kind"].is_string() ? j["kind"].get<std::string>() : "";
  if (kind != "full" && kind != "incremental") return "kind";
  const json& nbd = j["nbd"];
  if (!nbd.is_object() || keys(nbd) != std::set<std::string>{"host", "port", "tls"} || !nbd["host"].is_string() ||
      !nbd["port"].is_number_integer() || nbd["port"].get<int>() <= 0 || nbd["tls"] != "psk")
    return "nbd";
  if (!j["disks"].is_array() || j["disks"].empty()) return "disks";
  bool any_base = false;
  for (const auto& d : j["disks"]) {
    if (!d.is_object() || keys(d) != std::set<std::string>{"disk_key", "unit", "capacity_bytes", "export", "change_id_base"})
      return "disk fields differ";
    if (!d["disk_key"].is_string() || !d["unit"].is_number_integer() || !d["capacity_bytes"].is_number_integer() ||
        !d["export"].is_string())
      return "disk field types";
    if (d["export"] != export_name(j["vm_id"].get<std::string>(), d["unit"].get<int>())) return "export name";
    bool has_base = d["change_id_base"].is_string();
    if (!has_base && !d["change_id_base"].is_null()) return "change_id_base type";
    if (kind == "full" && has_base) return "change_id_base in a full pass";
    any_base = any_base || has_base;
  }
  if (kind == "incremental" && !any_base) return "an incremental pass without any base change ID";
  return "";
}

void FakeVma::handle_replicate(const httplib::Request& req, httplib::Response& res) {
  json j = json::parse(req.body, nullptr, false);
  std::lock_guard lock(mu_);
  requests_.push_back(j);
  if (std::string bad = check_request(j); !bad.empty()) {
    violations_.push_back(bad);
    res.status = 400;
    res.set_content(json{{"error", bad}}.dump(), "application/json");
    return;
  }
  std::string job_id = j["job_id"];
  if (jobs_.count(job_id)) {
    res.status = 409;
    res.set_content(json{{"error", "job " + job_id + " is already running"}}.dump(), "application/json");
    return;
  }
  Job& job = jobs_[job_id];
  job.vm_id = j["vm_id"];
  for (const auto& d : j["disks"]) {
    auto disk = std::make_unique<Disk>();
    disk->key = d["disk_key"];
    disk->export_name = d["export"];
    disk->capacity = d["capacity_bytes"];
    auto src = sources_.find(disk->key);
    if (src != sources_.end()) {
      disk->progress_file = dir_.file(fmt::format("{}-{}-{}.json", job_id, disk->key, generation_++));
      std::string target = fmt::format("nbds://{}:{}/{}", j["nbd"]["host"].get<std::string>(),
                                       j["nbd"]["port"].get<int>(), disk->export_name);
      disk->copy = std::make_unique<Subprocess>(mk::test::start_migratekit(
          {"copy", src->second, target, "--target-tls-psk", psk_, "--progress-json", disk->progress_file, "-q"},
          "", disk->progress_file + ".err"));
    }
    job.disks.push_back(std::move(disk));
  }
  res.status = 202;
  res.set_content(json{{"job_id", job_id}, {"vma_instance", instance_}}.dump(), "application/json");
}

json FakeVma::disk_progress(const std::string& job_id, Disk& d) {
  if (!d.scripted.is_null()) {
    json p = d.scripted;
    p["disk_key"] = d.key;
    return p;
  }
  json p = {{"disk_key", d.key}, {"status", "pending"}, {"phase", "pending"}, {"bytes_done", 0},
            {"bytes_total", d.capacity}, {"throughput_bps", 0.0}, {"eta_seconds", 0.0}};
  if (!d.copy) {
    if (auto_complete_) {
      p["status"] = "completed";
      p["phase"] = "done";
      p["bytes_done"] = d.capacity;
      p["change_id"] = "cbt-" + job_id + "-" + d.key;
    }
    return p;
  }
  // The engine's last complete JSON progress line.
  std::ifstream in(d.progress_file);
  std::string line, last;
  while (std::getline(in, line)) if (!line.empty() && line.back() == '}') last = line;
  if (!last.empty()) {
    json e = json::parse(last, nullptr, false);
    if (e.is_object()) {
      p["phase"] = e.value("phase", "copying");
      p["bytes_done"] = e.value("bytes_done", 0);
      p["bytes_total"] = e.value("bytes_total", 0);
      p["throughput_bps"] = e.value("throughput_bps", 0.0);
      p["eta_seconds"] = e.value("eta_seconds", 0.0);
    }
  }
  if (d.copy->running()) {
    p["status"] = "copying";
  } else if (d.copy->exit_status() == 0) {
    p["status"] = "completed";
    p["change_id"] = "cbt-" + job_id + "-" + d.key;
  } else {
    p["status"] = "failed";
    p["error"] = fmt::format("migratekit copy exited with status {}", d.copy->exit_status().value_or(-1));
  }
  return p;
}

void FakeVma::handle_progress(const httplib::Request& req, httplib::Response& res) {
  polls_++;
  std::string job_id = req.matches[1];
  std::lock_guard lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    res.status = 404;
    res.set_content(json{{"error", "no job " + job_id}}.dump(), "application/json");
    return;
  }
  json disks = json::array();
  for (auto& d : it->second.disks) disks.push_back(disk_progress(job_id, *d));
  res.set_content(json{{"job_id", job_id}, {"vma_instance", instance_}, {"disks", disks}}.dump(), "application/json");
}

void FakeVma::handle_stop(const httplib::Request& req, httplib::Response& res) {
  std::string job_id = req.matches[1];
  std::lock_guard lock(mu_);
  stopped_.push_back(job_id);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    res.status = 404;
    res.set_content(json{{"error", "no job " + job_id}}.dump(), "application/json");
    return;
  }
  for (auto& d : it->second.disks) if (d->copy) d->copy->stop();
  jobs_.erase(it);
  res.set_content(json{{"job_id", job_id}, {"stopped", true}}.dump(), "application/json");
}

namespace {

void reply_error(httplib::Response& res, int status, const std::string& message) {
  res.status = status;
  res.set_content(json{{"error", message}}.dump(), "application/json");
}

}  // namespace

void FakeVma::add_source_vm(const std::string& vm_id, const std::string& name, bool on) {
  std::lock_guard lock(mu_);
  source_vms_[vm_id] = {name, on, 0};
}

bool FakeVma::powered_on(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  return source_vms_.at(vm_id).on;
}

void FakeVma::fail_power(const std::string& action, const std::string& message) {
  std::lock_guard lock(mu_);
  power_failures_[action] = message;
}

void FakeVma::set_leftover_snapshots(const std::string& vm_id, int n) {
  std::lock_guard lock(mu_);
  source_vms_.at(vm_id).leftover_snapshots = n;
}

std::vector<std::string> FakeVma::power_calls() {
  std::lock_guard lock(mu_);
  return power_calls_;
}

void FakeVma::handle_power(const httplib::Request& req, httplib::Response& res) {
  std::string vm_id = req.matches[1];
  json j = json::parse(req.body, nullptr, false);
  std::lock_guard lock(mu_);
  auto violation = [&](const std::string& what) {
    violations_.push_back("power: " + what);
    reply_error(res, 400, what);
  };
  if (!j.is_object() || j.size() != 2 || !j.contains("action") || !j.contains("timeout_seconds"))
    return violation("body must be exactly {action, timeout_seconds}");
  std::string action = j["action"].is_string() ? j["action"].get<std::string>() : "";
  if (action != "shutdown" && action != "off" && action != "on") return violation("unknown action");
  if (!j["timeout_seconds"].is_number_integer() || j["timeout_seconds"].get<int64_t>() < 1 ||
      j["timeout_seconds"].get<int64_t>() > 86400)
    return violation("timeout_seconds must be an integer of 1..86400");
  auto it = source_vms_.find(vm_id);
  if (it == source_vms_.end()) return reply_error(res, 404, "no VM " + vm_id + " in vCenter");
  power_calls_.push_back(action + " " + vm_id);
  if ((action == "on") == it->second.on) {
    violations_.push_back(fmt::format("power: {} asked for VM {}, which is already {}", action, vm_id,
                                      it->second.on ? "on" : "off"));
    return reply_error(res, 409, "VM " + vm_id + " is already in that state");
  }
  if (auto f = power_failures_.find(action); f != power_failures_.end()) {
    std::string message = f->second;
    power_failures_.erase(f);
    return reply_error(res, 500, message);
  }
  bool forced = action == "shutdown" && ignore_shutdown_;
  it->second.on = action == "on";
  res.set_content(json{{"vm_id", vm_id}, {"power_state", it->second.on ? "poweredOn" : "poweredOff"},
                       {"forced", forced}}
                      .dump(),
                  "application/json");
}

void FakeVma::handle_cleanup(const httplib::Request& req, httplib::Response& res) {
  std::string vm_id = req.matches[1];
  std::lock_guard lock(mu_);
  json j = json::parse(req.body, nullptr, false);
  if (!j.is_object() || !j.empty()) {
    violations_.push_back("cleanup: body must be {}");
    return reply_error(res, 400, "body must be {}");
  }
  auto it = source_vms_.find(vm_id);
  if (it == source_vms_.end()) return reply_error(res, 404, "no VM " + vm_id + " in vCenter");
  for (const auto& [id, job] : jobs_) {
    if (job.vm_id == vm_id && !job.stopped) {
      bool running = false;
      for (const auto& d : job.disks) running |= d->copy && d->copy->running();
      if (running) {
        violations_.push_back("cleanup: VM " + vm_id + " while its job " + id + " is copying");
        return reply_error(res, 409, "a job of VM " + vm_id + " is copying");
      }
    }
  }
  power_calls_.push_back("cleanup " + vm_id);
  int n = it->second.leftover_snapshots;
  it->second.leftover_snapshots = 0;
  res.set_content(json{{"vm_id", vm_id}, {"snapshots_removed", n}}.dump(), "application/json");
}

void FakeVma::handle_discover(const httplib::Request&, httplib::Response& res) {
  std::lock_guard lock(mu_);
  json vms = json::array();
  for (const auto& [id, vm] : source_vms_) {
    vms.push_back({{"vm_id", id}, {"name", vm.name}, {"datacenter", "DC0"},
                   {"power_state", vm.on ? "poweredOn" : "poweredOff"}, {"cpus", 2}, {"memory_mb", 2048},
                   {"guest_os", "otherGuest64"}, {"disks", vm.disks}, {"nics", json::array()},
                   {"findings", vm.findings}});
  }
  res.set_content(json{{"vcenter", "vcsim.test"}, {"vms", vms}}.dump(), "application/json");
}

void FakeVma::set_findings(const std::string& vm_id, const json& findings) {
  std::lock_guard lock(mu_);
  source_vms_.at(vm_id).findings = findings;
}

void FakeVma::set_source_disks(const std::string& vm_id, const json& disks) {
  std::lock_guard lock(mu_);
  source_vms_.at(vm_id).disks = disks;
}

void FakeVma::handle_preflight(const httplib::Request& req, httplib::Response& res) {
  std::lock_guard lock(mu_);
  std::string vm_id = req.matches[1];
  auto it = source_vms_.find(vm_id);
  json findings = it == source_vms_.end() ? json::array() : it->second.findings;
  res.set_content(json{{"vm_id", vm_id}, {"findings", findings}}.dump(), "application/json");
}

}  // namespace mk::oma::test
