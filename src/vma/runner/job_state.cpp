#include "vma/runner/job_state.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "vma/files.h"

namespace mk::vma {

using nlohmann::json;

namespace {

json opt(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }
std::optional<std::string> opt_of(const json& j, const char* name) {
  if (!j.contains(name) || j[name].is_null()) return std::nullopt;
  return j[name].get<std::string>();
}

}  // namespace

json to_json(const JobState& job) {
  json disks = json::array();
  for (const auto& d : job.disks) {
    json p = progress_json(d);
    p["export"] = d.export_name;
    p["unit"] = d.unit;
    p["capacity_bytes"] = d.capacity_bytes;
    p["change_id_base"] = opt(d.change_id_base);
    disks.push_back(p);
  }
  return {{"job_id", job.job_id}, {"vm_id", job.vm_id},   {"kind", job.kind},       {"nbd_host", job.nbd_host},
          {"nbd_port", job.nbd_port}, {"status", job.status}, {"error", opt(job.error)}, {"created", job.created},
          {"ended", job.ended},   {"disks", disks}};
}

JobState job_from_json(const json& j) {
  try {
    JobState job;
    job.job_id = j.at("job_id").get<std::string>();
    job.vm_id = j.at("vm_id").get<std::string>();
    job.kind = j.at("kind").get<std::string>();
    job.nbd_host = j.at("nbd_host").get<std::string>();
    job.nbd_port = j.at("nbd_port").get<int>();
    job.status = j.at("status").get<std::string>();
    job.error = opt_of(j, "error");
    job.created = j.at("created").get<int64_t>();
    job.ended = j.at("ended").get<int64_t>();
    for (const auto& x : j.at("disks")) {
      DiskState d;
      d.disk_key = x.at("disk_key").get<std::string>();
      d.export_name = x.at("export").get<std::string>();
      d.unit = x.at("unit").get<int64_t>();
      d.capacity_bytes = x.at("capacity_bytes").get<int64_t>();
      d.change_id_base = opt_of(x, "change_id_base");
      d.status = x.at("status").get<std::string>();
      d.phase = x.at("phase").get<std::string>();
      d.bytes_done = x.at("bytes_done").get<int64_t>();
      d.bytes_total = x.at("bytes_total").get<int64_t>();
      d.throughput_bps = x.at("throughput_bps").get<double>();
      d.eta_seconds = x.at("eta_seconds").get<double>();
      d.change_id = opt_of(x, "change_id");
      d.error = opt_of(x, "error");
      job.disks.push_back(std::move(d));
    }
    if (!is_uuid(job.job_id)) throw Error("job_id is not a UUID");
    return job;
  } catch (const json::exception& e) {
    throw Error(fmt::format("malformed job record: {}", e.what()));
  }
}

json progress_json(const DiskState& d) {
  json p = {{"disk_key", d.disk_key},         {"status", d.status},         {"phase", d.phase},
            {"bytes_done", d.bytes_done},     {"bytes_total", d.bytes_total}, {"throughput_bps", d.throughput_bps},
            {"eta_seconds", d.eta_seconds}};
  if (d.change_id) p["change_id"] = *d.change_id;
  if (d.error) p["error"] = *d.error;
  return p;
}

JobStore::JobStore(std::string dir) : dir_(std::move(dir)) {
  std::filesystem::create_directories(dir_);
  ::chmod(dir_.c_str(), 0700);
}

std::string JobStore::path(const std::string& job_id) const {
  if (!is_uuid(job_id)) throw Error(fmt::format("job id \"{}\" is not a UUID", job_id.substr(0, 40)));
  return dir_ + "/" + job_id + ".json";
}

void JobStore::save(const JobState& job) { write_private_file(path(job.job_id), to_json(job).dump(1) + "\n"); }

std::vector<JobState> JobStore::load_all() {
  std::vector<JobState> out;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    if (!name.ends_with(".json")) continue;
    try {
      std::ifstream in(e.path());
      std::stringstream text;
      text << in.rdbuf();
      JobState job = job_from_json(json::parse(text.str()));
      if (job.job_id + ".json" != name) throw Error("the file name does not match the job id");
      out.push_back(std::move(job));
    } catch (const std::exception& ex) {
      log::error("job record {} is unreadable and is ignored (move it away once examined): {}", e.path().string(),
                 ex.what());
    }
  }
  return out;
}

void JobStore::prune(std::vector<JobState>& jobs, int64_t max_age_seconds) {
  int64_t now = std::time(nullptr);
  std::erase_if(jobs, [&](const JobState& j) {
    if (!j.ended_state() || j.ended == 0 || now - j.ended <= max_age_seconds) return false;
    std::error_code ec;
    std::filesystem::remove(path(j.job_id), ec);
    return true;
  });
}

}  // namespace mk::vma
