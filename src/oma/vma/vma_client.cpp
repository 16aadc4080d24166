#include "oma/vma/vma_client.h"

#include <fmt/format.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

namespace mk::oma {
namespace {

using nlohmann::json;

httplib::Client make_client(const std::string& base, std::chrono::milliseconds timeout,
                            const std::string& token) {
  httplib::Client c(base);
  if (!token.empty()) c.set_bearer_token_auth(token);
  c.set_connection_timeout(timeout);
  c.set_read_timeout(timeout);
  c.set_write_timeout(timeout);
  return c;
}

template <typename T>
T field(const json& j, const char* name, const std::string& where) {
  if (!j.contains(name)) throw Error(fmt::format("{}: answer lacks '{}' (VMA protocol mismatch)", where, name));
  try {
    return j.at(name).get<T>();
  } catch (const json::exception&) {
    throw Error(fmt::format("{}: '{}' has the wrong type (VMA protocol mismatch)", where, name));
  }
}

std::optional<std::string> opt_string(const json& j, const char* name, const std::string& where) {
  if (!j.contains(name) || j.at(name).is_null()) return std::nullopt;
  return field<std::string>(j, name, where);
}

// A VMA older than the findings sends none: nothing known.
std::vector<PreflightFinding> findings_of(const json& j, const std::string& where) {
  std::vector<PreflightFinding> out;
  if (!j.contains("findings")) return out;
  auto all = field<json>(j, "findings", where);
  if (!all.is_array()) throw Error(where + ": 'findings' is not an array (VMA protocol mismatch)");
  for (const auto& f : all) {
    out.push_back({field<std::string>(f, "code", where), opt_string(f, "disk_key", where),
                   field<std::string>(f, "problem", where), field<std::string>(f, "remedy", where),
                   field<std::string>(f, "text", where)});
  }
  return out;
}

json parse(const std::string& body, const std::string& where) {
  try {
    json j = json::parse(body);
    if (!j.is_object()) throw Error(where + ": answer is not a JSON object (VMA protocol mismatch)");
    return j;
  } catch (const json::parse_error&) {
    throw Error(where + ": answer is not JSON (VMA protocol mismatch)");
  }
}

std::string error_of(const std::string& body) {
  try {
    auto j = json::parse(body);
    if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
  } catch (...) {
  }
  return body.substr(0, 200);
}

}  // namespace

HttpVmaClient::HttpVmaClient(std::string base_url, std::chrono::milliseconds timeout, std::string token)
    : base_url_(std::move(base_url)), timeout_(timeout), token_(std::move(token)) {}

std::string HttpVmaClient::replicate(const ReplicateRequest& r) {
  json disks = json::array();
  for (const auto& d : r.disks) {
    disks.push_back({{"disk_key", d.disk_key},
                     {"unit", d.unit},
                     {"capacity_bytes", d.capacity_bytes},
                     {"export", d.export_name},
                     {"change_id_base", d.change_id_base ? json(*d.change_id_base) : json(nullptr)}});
  }
  json body = {{"job_id", r.job_id},
               {"vm_id", r.vm_id},
               {"kind", r.kind},
               {"nbd", {{"host", r.nbd_host}, {"port", r.nbd_port}, {"tls", r.tls}}},
               {"disks", disks}};
  std::string where = fmt::format("{}: replicate job {}", describe(), r.job_id);
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Post("/api/v1/replicate", body.dump(), "application/json");
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status == 409) return "";  // already running (idempotent retry after an OMA restart)
  if (res->status != 202 && res->status != 200) {
    throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  }
  json j = parse(res->body, where);
  if (field<std::string>(j, "job_id", where) != r.job_id) throw Error(where + ": answer names another job");
  return field<std::string>(j, "vma_instance", where);
}

JobProgress HttpVmaClient::progress(const std::string& job_id) {
  std::string where = fmt::format("{}: progress of job {}", describe(), job_id);
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Get(("/api/v1/progress/" + job_id).c_str());
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status == 404) throw VmaJobUnknown(fmt::format("{}: the VMA does not know this job: {}", where, error_of(res->body)));
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  json j = parse(res->body, where);
  JobProgress p;
  p.job_id = field<std::string>(j, "job_id", where);
  if (p.job_id != job_id) throw Error(where + ": answer names another job");
  p.vma_instance = field<std::string>(j, "vma_instance", where);
  auto disks = field<json>(j, "disks", where);
  if (!disks.is_array()) throw Error(where + ": 'disks' is not an array (VMA protocol mismatch)");
  for (const auto& d : disks) {
    if (!d.is_object()) throw Error(where + ": a disk entry is not an object (VMA protocol mismatch)");
    DiskProgress dp;
    dp.disk_key = field<std::string>(d, "disk_key", where);
    dp.status = field<std::string>(d, "status", where);
    if (dp.status != "pending" && dp.status != "copying" && dp.status != "completed" && dp.status != "failed") {
      throw Error(fmt::format("{}: disk {} has unknown status '{}' (VMA protocol mismatch)", where, dp.disk_key,
                              dp.status.substr(0, 40)));
    }
    dp.phase = field<std::string>(d, "phase", where);
    dp.bytes_done = field<int64_t>(d, "bytes_done", where);
    dp.bytes_total = field<int64_t>(d, "bytes_total", where);
    dp.throughput_bps = field<double>(d, "throughput_bps", where);
    dp.eta_seconds = field<double>(d, "eta_seconds", where);
    dp.change_id = opt_string(d, "change_id", where);
    dp.error = opt_string(d, "error", where);
    p.disks.push_back(std::move(dp));
  }
  return p;
}

void HttpVmaClient::stop(const std::string& job_id) {
  std::string where = fmt::format("{}: stop job {}", describe(), job_id);
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Post(("/api/v1/stop/" + job_id).c_str(), "{}", "application/json");
  if (!res) throw VmaUnreachable(fmt::format("{}: {}", where, httplib::to_string(res.error())));
  if (res->status == 404) return;  // nothing running there: stopped is what we wanted
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
}

int HttpVmaClient::cleanup(const std::string& vm_id) {
  std::string where = fmt::format("{}: clean up snapshots of VM {}", describe(), vm_id);
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Post(("/api/v1/cleanup/" + vm_id).c_str(), "{}", "application/json");
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  return field<int>(parse(res->body, where), "snapshots_removed", where);
}

PowerResult HttpVmaClient::power(const std::string& vm_id, const std::string& action, int timeout_seconds) {
  std::string where = fmt::format("{}: power {} VM {}", describe(), action, vm_id);
  // A guest shutdown may take its whole timeout: wait for it on top of the usual one.
  auto c = make_client(base_url_, timeout_ + std::chrono::seconds(timeout_seconds), token_);
  json body = {{"action", action}, {"timeout_seconds", timeout_seconds}};
  auto res = c.Post(("/api/v1/power/" + vm_id).c_str(), body.dump(), "application/json");
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  json j = parse(res->body, where);
  if (field<std::string>(j, "vm_id", where) != vm_id) throw Error(where + ": answer names another VM");
  PowerResult r;
  r.power_state = field<std::string>(j, "power_state", where);
  if (r.power_state != "poweredOff" && r.power_state != "poweredOn") {
    throw Error(fmt::format("{}: unknown power state '{}' (VMA protocol mismatch)", where, r.power_state.substr(0, 40)));
  }
  r.forced = field<bool>(j, "forced", where);
  return r;
}

Discovery HttpVmaClient::discover() {
  std::string where = describe() + ": discover";
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Get("/api/v1/discover");
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  json j = parse(res->body, where);
  Discovery d;
  d.vcenter = field<std::string>(j, "vcenter", where);
  auto vms = field<json>(j, "vms", where);
  if (!vms.is_array()) throw Error(where + ": 'vms' is not an array (VMA protocol mismatch)");
  for (const auto& v : vms) {
    DiscoveredVm vm;
    vm.vm_id = field<std::string>(v, "vm_id", where);
    vm.name = field<std::string>(v, "name", where);
    vm.datacenter = field<std::string>(v, "datacenter", where);
    vm.power_state = field<std::string>(v, "power_state", where);
    vm.guest_os = field<std::string>(v, "guest_os", where);
    vm.cpus = field<int64_t>(v, "cpus", where);
    vm.memory_mb = field<int64_t>(v, "memory_mb", where);
    for (const auto& k : field<json>(v, "disks", where)) {
      vm.disks.push_back({field<std::string>(k, "disk_key", where), field<std::string>(k, "label", where),
                          field<int64_t>(k, "unit", where), field<int64_t>(k, "capacity_bytes", where)});
    }
    for (const auto& n : field<json>(v, "nics", where)) {
      vm.nics.push_back({field<std::string>(n, "key", where), field<std::string>(n, "mac", where),
                         field<std::string>(n, "network", where)});
    }
    vm.findings = findings_of(v, where);
    d.vms.push_back(std::move(vm));
  }
  return d;
}

std::vector<PreflightFinding> HttpVmaClient::preflight(const std::string& vm_id) {
  std::string where = fmt::format("{}: preflight of VM {}", describe(), vm_id);
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Get(("/api/v1/preflight/" + vm_id).c_str());
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  json j = parse(res->body, where);
  if (field<std::string>(j, "vm_id", where) != vm_id) throw Error(where + ": answer names another VM");
  if (!j.contains("findings")) throw Error(where + ": answer lacks 'findings' (VMA protocol mismatch)");
  return findings_of(j, where);
}

VmaHealth HttpVmaClient::health() {
  std::string where = describe() + ": health";
  auto c = make_client(base_url_, timeout_, token_);
  auto res = c.Get("/api/v1/health");
  if (!res) throw VmaUnreachable(fmt::format("{}: {} (is the tunnel up?)", where, httplib::to_string(res.error())));
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
  json j = parse(res->body, where);
  VmaHealth h;
  h.status = field<std::string>(j, "status", where);
  h.vma_instance = field<std::string>(j, "vma_instance", where);
  auto vc = field<json>(j, "vcenter", where);
  h.vcenter_reachable = field<bool>(vc, "reachable", where);
  h.vcenter_error = opt_string(vc, "error", where);
  auto t = field<json>(j, "tunnel", where);
  h.tunnel_state = field<std::string>(t, "state", where);
  h.tunnel_since = field<int64_t>(t, "since", where);
  h.tunnel_error = opt_string(t, "error", where);
  return h;
}

}  // namespace mk::oma
