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
using protocol::DiskStatus;
using protocol::VmaJobStatus;

JobState JobState::from(protocol::ReplicateRequest request) {
  JobState job;
  for (const auto& d : request.disks) {
    protocol::DiskProgress p;
    p.disk_key = d.disk_key;
    job.disks.push_back(p);
  }
  job.request = std::move(request);
  return job;
}

bool JobState::ended_state() const {
  return status == VmaJobStatus::Completed || status == VmaJobStatus::Failed || status == VmaJobStatus::Stopped;
}

protocol::JobProgress JobState::progress(const std::string& vma_instance) const {
  protocol::JobProgress p{job_id(), vma_instance, status, error, disks, {}, ended_seconds_ago, std::nullopt};
  for (const auto& d : disks) {
    p.total.bytes_done += d.bytes_done;
    p.total.bytes_total += d.bytes_total;
    if (d.status == DiskStatus::Copying) p.total.throughput_bps += d.throughput_bps;
  }
  return p;
}

// The record: the request as the OMA sent it, the job's status and each disk's progress
// as the progress route reports it.
json to_json(const JobState& job) {
  json disks = json::array();
  for (const auto& d : job.disks) disks.push_back(protocol::encode(d));
  return {{"request", protocol::encode(job.request)},
          {"status", enum_name(job.status)},
          {"error", job.error ? json(*job.error) : json(nullptr)},
          {"created", job.created},
          {"ended", job.ended},
          {"disks", disks},
          {"snapshot", job.snapshot}};
}

JobState job_from_json(const json& j) {
  try {
    JobState job;
    job.request = protocol::decode<protocol::ReplicateRequest>(j.at("request"));
    job.status = protocol::parse_field<VmaJobStatus>(j.at("status").get<std::string>(), "status");
    if (!j.at("error").is_null()) job.error = j.at("error").get<std::string>();
    job.created = j.at("created").get<int64_t>();
    job.ended = j.at("ended").get<int64_t>();
    for (json d : j.at("disks")) {
      // Records of a VMA before protocol version 2 have no phase times.
      if (d.is_object() && !d.contains("phases")) d["phases"] = json::array();
      job.disks.push_back(protocol::decode<protocol::DiskProgress>(d));
    }
    job.snapshot = j.value("snapshot", std::string());  // records of VMAs before resume have none
    if (job.disks.size() != job.request.disks.size()) throw Error("the disks do not match the request's");
    for (size_t i = 0; i < job.disks.size(); ++i) {
      if (job.disks[i].disk_key != job.request.disks[i].disk_key) throw Error("the disks do not match the request's");
    }
    return job;
  } catch (const json::exception& e) {
    throw Error(fmt::format("malformed job record: {}", e.what()));
  } catch (const schema::FieldError& e) {
    throw Error(fmt::format("malformed job record: {}", e.what()));
  }
}

JobStore::JobStore(std::string dir) : dir_(std::move(dir)) {
  std::filesystem::create_directories(dir_);
  ::chmod(dir_.c_str(), 0700);
}

std::string JobStore::path(const std::string& job_id) const {
  if (!protocol::is_uuid(job_id)) throw Error(fmt::format("job id \"{}\" is not a UUID", job_id.substr(0, 40)));
  return dir_ + "/" + job_id + ".json";
}

void JobStore::save(const JobState& job) { write_private_file(path(job.job_id()), to_json(job).dump(1) + "\n"); }

namespace {

// The job recorded in `file`, named `name` (JOB_ID.json). Throws when unreadable.
JobState read_record(const std::filesystem::path& file, const std::string& name) {
  std::ifstream in(file);
  if (!in) throw Error("cannot open it");
  std::stringstream text;
  text << in.rdbuf();
  JobState job = job_from_json(json::parse(text.str()));
  if (job.job_id() + ".json" != name) throw Error("the file name does not match the job id");
  return job;
}

void log_unreadable(const std::filesystem::path& file, const std::exception& ex) {
  log::error("job record {} is unreadable and is ignored (move it away once examined): {}", file.string(), ex.what());
}

}  // namespace

std::vector<JobState> JobStore::load_all() {
  std::vector<JobState> out;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) {
    std::string name = e.path().filename().string();
    if (!name.ends_with(".json")) continue;
    try {
      out.push_back(read_record(e.path(), name));
    } catch (const std::exception& ex) {
      log_unreadable(e.path(), ex);
    }
  }
  return out;
}

std::optional<JobState> JobStore::load(const std::string& job_id) {
  std::filesystem::path file = path(job_id);
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return std::nullopt;
  try {
    return read_record(file, job_id + ".json");
  } catch (const std::exception& ex) {
    log_unreadable(file, ex);
    return std::nullopt;
  }
}

bool JobStore::contains(const std::string& job_id) const {
  std::error_code ec;
  return std::filesystem::exists(path(job_id), ec);
}

void JobStore::prune(std::vector<JobState>& jobs, int64_t max_age_seconds) {
  int64_t now = std::time(nullptr);
  std::erase_if(jobs, [&](const JobState& j) {
    if (!j.ended_state() || j.ended == 0 || now - j.ended <= max_age_seconds) return false;
    std::error_code ec;
    std::filesystem::remove(path(j.job_id()), ec);
    return true;
  });
}

}  // namespace mk::vma
