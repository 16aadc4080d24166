#include "oma/vma/vma_client.h"

#include <fmt/format.h>
#include <httplib.h>

#include <nlohmann/json.hpp>

namespace mk::oma {
namespace {

using nlohmann::json;

httplib::Client make_client(const std::string& base, std::chrono::milliseconds timeout) {
  httplib::Client c(base);
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

HttpVmaClient::HttpVmaClient(std::string base_url, std::chrono::milliseconds timeout)
    : base_url_(std::move(base_url)), timeout_(timeout) {}

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
  auto c = make_client(base_url_, timeout_);
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
  auto c = make_client(base_url_, timeout_);
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
  auto c = make_client(base_url_, timeout_);
  auto res = c.Post(("/api/v1/stop/" + job_id).c_str(), "{}", "application/json");
  if (!res) throw VmaUnreachable(fmt::format("{}: {}", where, httplib::to_string(res.error())));
  if (res->status == 404) return;  // nothing running there: stopped is what we wanted
  if (res->status != 200) throw Error(fmt::format("{}: HTTP {}: {}", where, res->status, error_of(res->body)));
}

}  // namespace mk::oma
