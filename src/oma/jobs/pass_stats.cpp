#include "oma/jobs/pass_stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

namespace mk::oma {
namespace {

constexpr size_t kPassesForPrediction = 3;

double seconds_between(int64_t from_ms, int64_t to_ms) { return std::max<double>(0, (to_ms - from_ms) / 1000.0); }

}  // namespace

std::optional<double> predict_downtime_seconds(const std::vector<JobRecord>& completed, int64_t now_ms, int* used,
                                               const std::map<std::string, double>& snapshot_seconds) {
  // completed: oldest first, all completed and finished.
  double duration = 0, window = 0;
  size_t n = 0;
  for (size_t i = completed.size(); i-- > 0 && n < kPassesForPrediction;) {
    const JobRecord& p = completed[i];
    if (p.kind != JobKind::Incremental || !p.finished_at) continue;
    // Less its snapshot's creation and removal: the final pass takes none (see the header).
    auto snap = snapshot_seconds.find(p.job_id);
    duration += std::max(0.0, seconds_between(p.created_at, *p.finished_at) -
                                  (snap == snapshot_seconds.end() ? 0.0 : snap->second));
    // The previous completed pass of the VM bounds the changes this one copied.
    int64_t prev_end = p.created_at;
    for (size_t k = i; k-- > 0;) {
      if (completed[k].finished_at && *completed[k].finished_at <= p.created_at) {
        prev_end = *completed[k].finished_at;
        break;
      }
    }
    window += std::max(1.0, seconds_between(prev_end, p.created_at));
    ++n;
  }
  if (used) *used = static_cast<int>(n);
  if (n == 0) return std::nullopt;
  double d = duration / n, w = window / n;
  double e = seconds_between(*completed.back().finished_at, now_ms);
  return d * std::max(1.0, e / w);
}

VmPassStats pass_stats(const VmRecord& vm, const std::vector<DiskRecord>& disks, const std::vector<JobRecord>& passes,
                       const std::vector<ChangeIdCommit>& commits, int64_t now_ms,
                       const std::map<std::string, double>& snapshot_seconds) {
  VmPassStats s;
  if (!passes.empty()) {
    const JobRecord& p = passes.back();
    s.last_pass = LastPass{p.job_id, p.kind, p.status, p.finished_at.value_or(0), p.bytes_done,
                           seconds_between(p.created_at, p.finished_at.value_or(p.created_at))};
  }

  std::map<std::string, int64_t> committed_at;
  for (const auto& c : commits) committed_at[c.disk_key] = c.committed_at;
  std::optional<int64_t> oldest;
  bool all = !disks.empty();
  for (const auto& d : disks) {
    auto it = committed_at.find(d.disk_key);
    if (!d.change_id || it == committed_at.end()) {
      all = false;
      s.cutover_blockers.push_back(
          fmt::format("disk {} ({}) has no committed change ID: run a full pass first", d.disk_key, d.label));
      continue;
    }
    oldest = oldest ? std::min(*oldest, it->second) : it->second;
  }
  if (all && oldest) s.change_id_age_seconds = seconds_between(*oldest, now_ms);
  if (vm.status == VmStatus::CutOver) s.cutover_blockers.push_back("the VM is cut over already: it runs in CloudStack");
  if (vm.current_job_id) {
    s.cutover_blockers.push_back(fmt::format("job {} is active: wait for it or cancel it", *vm.current_job_id));
  }
  s.ready_for_cutover = s.cutover_blockers.empty();

  std::vector<JobRecord> completed;
  for (const auto& p : passes)
    if (p.status == JobStatus::Completed && p.finished_at) completed.push_back(p);
  // A VM already cut over has no downtime ahead of it.
  if (vm.status != VmStatus::CutOver)
    s.predicted_downtime_seconds = predict_downtime_seconds(completed, now_ms, &s.incremental_passes_used, snapshot_seconds);
  return s;
}

}  // namespace mk::oma
