// JobState: one replication job as the VMA knows it (what to copy where, and how far
// each disk got), and JobStore: its persistence in the state directory, one JSON file
// per job (jobs/<job_id>.json, mode 0600, replaced atomically at every change of
// status), so that after a restart the VMA can tell the OMA that a pass was
// interrupted instead of forgetting it.
//
// Values and a store without shared state of its own: JobStore is thread-safe as long
// as one job is saved by one thread at a time (the runner's lock sees to it).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace mk::vma {

struct DiskState {
  std::string disk_key, export_name;
  int64_t unit = 0, capacity_bytes = 0;
  std::optional<std::string> change_id_base;  // null: a full copy
  std::string status = "pending";             // pending | copying | completed | failed
  std::string phase = "pending";              // pending, planning, copying, done, failed
  int64_t bytes_done = 0, bytes_total = 0;
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> change_id;       // set only once the disk is copied and flushed
  std::optional<std::string> error;
};

struct JobState {
  std::string job_id, vm_id, kind;  // kind: full | incremental
  std::string nbd_host;
  int nbd_port = 10809;
  std::string status = "queued";    // queued | running | completed | failed | stopped
  std::optional<std::string> error;
  int64_t created = 0, ended = 0;   // unix seconds
  std::vector<DiskState> disks;

  bool ended_state() const { return status == "completed" || status == "failed" || status == "stopped"; }
};

nlohmann::json to_json(const JobState& job);
JobState job_from_json(const nlohmann::json& j);  // throws mk::Error when malformed
// The disk as the progress route reports it (vma_client.h).
nlohmann::json progress_json(const DiskState& disk);

class JobStore {
 public:
  explicit JobStore(std::string dir);  // creates the directory (0700)
  void save(const JobState& job);
  // Every readable job; unreadable files are logged and left for an operator.
  std::vector<JobState> load_all();
  // Removes ended jobs that ended more than `max_age_seconds` ago.
  void prune(std::vector<JobState>& jobs, int64_t max_age_seconds);

 private:
  std::string path(const std::string& job_id) const;
  std::string dir_;
};

}  // namespace mk::vma
