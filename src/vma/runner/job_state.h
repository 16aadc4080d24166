// JobState: one replication job as the VMA knows it — the OMA's request (what to copy
// where) and how far each disk got, in the protocol's types — and JobStore: its
// persistence in the state directory, one JSON file per job (jobs/<job_id>.json, mode
// 0600, replaced atomically at every change of status), so that after a restart the
// VMA can tell the OMA that a pass was interrupted instead of forgetting it.
//
// Values and a store without shared state of its own: JobStore is thread-safe as long
// as one job is saved by one thread at a time (the runner's lock sees to it).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "protocol/messages.h"

namespace mk::vma {

struct JobState {
  protocol::ReplicateRequest request;
  protocol::VmaJobStatus status = protocol::VmaJobStatus::Queued;
  std::optional<std::string> error;
  int64_t created = 0, ended = 0;           // unix seconds
  std::vector<protocol::DiskProgress> disks;  // one per request.disks, in its order
  // The pass's snapshot (source::Pass::snapshot_id()) once it is open: a job that a
  // killed VMA left running resumes on it. "" before, or when the source cannot resume.
  // A pass without a snapshot (a powered-off VM) has source::kNoSnapshot followed by
  // its disks' changeIds at the start here: it resumes only while they still hold.
  std::string snapshot;
  // Live, not persisted: seconds since the job ended (JobRunner::get() sets it).
  std::optional<double> ended_seconds_ago;

  // A new job for `request`: queued, every disk pending.
  static JobState from(protocol::ReplicateRequest request);
  const std::string& job_id() const { return request.job_id; }
  const std::string& vm_id() const { return request.vm_id; }
  bool ended_state() const;
  // The job as the progress route answers it.
  protocol::JobProgress progress(const std::string& vma_instance) const;
};

nlohmann::json to_json(const JobState& job);
JobState job_from_json(const nlohmann::json& j);  // throws mk::Error naming the field when malformed

class JobStore {
 public:
  explicit JobStore(std::string dir);  // creates the directory (0700)
  void save(const JobState& job);
  // Every readable job; unreadable files are logged and left for an operator.
  std::vector<JobState> load_all();
  // One job's record; nullopt when there is none (or it is unreadable, which is logged).
  std::optional<JobState> load(const std::string& job_id);
  bool contains(const std::string& job_id) const;
  // Removes ended jobs that ended more than `max_age_seconds` ago.
  void prune(std::vector<JobState>& jobs, int64_t max_age_seconds);

 private:
  std::string path(const std::string& job_id) const;
  std::string dir_;
};

}  // namespace mk::vma
