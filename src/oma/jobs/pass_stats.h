// PassStats: what the VM list says about each VM's replication: its last pass, the age
// of its committed change IDs, whether it is ready for cutover, and the predicted
// downtime of a cutover started now. Pure functions over records; thread-safe.
//
// Predicted downtime (seconds), from the VM's last up to 3 completed incremental passes:
//
//   d = mean duration of those passes (created -> finished, so it includes each pass's
//       fixed costs: export check, commit) less the time each spent creating and
//       removing its snapshot (the job's recorded Snapshot and SnapshotRemoval phases,
//       `snapshot_seconds`): the source is powered off during the final pass, which
//       therefore takes no snapshot (source/vmware_source.h)
//   w = mean change window they copied (a pass's start minus the end of the VM's
//       previous completed pass)
//   e = time since the VM's last completed pass ended (the window a final pass copies)
//   predicted = d * max(1, e / w)
//
// A pass's work grows with the changes it copies, which grow with its window; scaling
// the whole duration (fixed costs included) errs on the long side. It covers the final
// pass only: the guest's shutdown and the VM's creation in CloudStack come on top. No
// completed incremental pass, or a VM already cut over: no prediction (null).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "oma/db/job_repository.h"
#include "oma/db/vm_repository.h"

namespace mk::oma {

struct LastPass {
  std::string job_id;
  JobKind kind = JobKind::Full;
  JobStatus status = JobStatus::Completed;
  int64_t finished_at = 0, bytes = 0;
  double seconds = 0;
};

struct VmPassStats {
  std::optional<LastPass> last_pass;                 // newest ended full/incremental pass
  std::optional<double> change_id_age_seconds;       // oldest disk's newest commit; null if a disk has none
  bool ready_for_cutover = false;
  std::vector<std::string> cutover_blockers;         // why not, for the operator
  std::optional<double> predicted_downtime_seconds;
  int incremental_passes_used = 0;                   // how many passes the prediction used
};

// `passes`: the VM's ended passes, oldest first; `commits`: the VM's change-ID commits;
// `snapshot_seconds`: job id -> its snapshot's creation and removal seconds
// (JobRepository::incremental_snapshot_seconds()).
VmPassStats pass_stats(const VmRecord& vm, const std::vector<DiskRecord>& disks, const std::vector<JobRecord>& passes,
                       const std::vector<ChangeIdCommit>& commits, int64_t now_ms,
                       const std::map<std::string, double>& snapshot_seconds = {});

// The downtime formula alone (see above); nullopt when `completed` has no incremental pass.
std::optional<double> predict_downtime_seconds(const std::vector<JobRecord>& completed, int64_t now_ms,
                                               int* used = nullptr,
                                               const std::map<std::string, double>& snapshot_seconds = {});

}  // namespace mk::oma
