#include "vma/runner/job_runner.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <functional>

#include "common/log.h"
#include "engine/endpoint_lost.h"
#include "engine/nbd_connection.h"
#include "source/pass_copy.h"

namespace mk::vma {
namespace {

using protocol::DiskPhase;
using protocol::DiskStatus;
using protocol::VmaJobStatus;

int64_t now() { return std::time(nullptr); }

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::string target_uri(const protocol::NbdTarget& nbd, const protocol::ReplicateDisk& disk, int nbd_via_port,
                       const std::function<int(const protocol::NbdTarget&)>& nbd_via) {
  if (nbd_via) return fmt::format("nbds://127.0.0.1:{}/{}", nbd_via(nbd), disk.export_name);
  if (nbd_via_port > 0) return fmt::format("nbds://127.0.0.1:{}/{}", nbd_via_port, disk.export_name);
  std::string host = nbd.host.find(':') != std::string::npos ? "[" + nbd.host + "]" : nbd.host;
  return fmt::format("nbds://{}:{}/{}", host, nbd.port, disk.export_name);
}

// Adds `phases` (in PassPhase order) to a disk's record. A pass resumed after a VMA
// restart runs its phases again (snapshot, change query, reader start): their times
// add up with the interrupted run's, so that each phase stays listed once, in order.
void merge_phases(std::vector<protocol::PhaseTime>& to, const std::vector<protocol::PhaseTime>& phases) {
  for (const auto& p : phases) {
    auto it = std::find_if(to.begin(), to.end(), [&](const protocol::PhaseTime& t) { return t.phase == p.phase; });
    if (it != to.end()) {
      it->seconds += p.seconds;
    } else {
      to.insert(std::find_if(to.begin(), to.end(), [&](const protocol::PhaseTime& t) { return t.phase > p.phase; }),
                p);
    }
  }
}

// Removes the checkpoint files in `dir` (named <job id>-<disk key>.ckpt) whose job id
// `drop` says to. Errors are logged: a file left behind is only disk space.
void remove_checkpoint_files(const std::string& dir, const std::function<bool(const std::string&)>& drop) {
  if (dir.empty()) return;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!name.ends_with(".ckpt") || !drop(name.substr(0, name.find('-', 36)))) continue;
    std::error_code rm;
    std::filesystem::remove(e.path(), rm);
    if (rm) log::warn("cannot remove checkpoint {}: {}", e.path().string(), rm.message());
  }
}

// A disk that failed, and why.
void mark_failed(protocol::DiskProgress& d, const std::string& error) {
  d.status = DiskStatus::Failed;
  d.phase = DiskPhase::Failed;
  d.error = error;
  d.throughput_bps = d.eta_seconds = 0;
}

}  // namespace

JobRunner::JobRunner(RunnerOptions options, VCenter& vcenter, JobStore& store)
    : options_(std::move(options)), vcenter_(vcenter), store_(store) {
  options_.max_vms = std::max(1, options_.max_vms);
  options_.max_disks_per_vm = std::max(1, options_.max_disks_per_vm);
}

JobRunner::~JobRunner() { shutdown(); }

void JobRunner::recover() {
  auto jobs = store_.load_all();
  store_.prune(jobs, options_.keep_ended_jobs_seconds);
  std::lock_guard lock(mu_);
  std::vector<Job*> resume;
  for (auto& state : jobs) {
    auto job = std::make_unique<Job>();
    job->state = std::move(state);
    job->finished = true;
    JobState& s = job->state;
    if (!s.ended_state() && !options_.checkpoint_dir.empty()) {
      // Disks not completed go back to pending; completed ones keep their change ID.
      for (auto& d : s.disks) {
        if (d.status == DiskStatus::Completed) continue;
        d.status = DiskStatus::Pending;
        d.phase = DiskPhase::Pending;
        d.throughput_bps = d.eta_seconds = 0;
        d.error.reset();
      }
      s.status = VmaJobStatus::Queued;
      job->finished = false;
      job->progress.resize(s.disks.size());
      log::warn("job {} (VM {}): the VMA restarted during this pass; resuming it{}", s.job_id(), s.vm_id(),
                s.snapshot.empty() ? "" : " on snapshot " + s.snapshot);
      save(*job);
      resume.push_back(job.get());
    } else if (!s.ended_state()) {
      for (auto& d : s.disks) {
        if (d.status != DiskStatus::Completed) mark_failed(d, kInterrupted);
      }
      s.status = VmaJobStatus::Failed;
      s.error = kInterrupted;
      s.ended = now();
      log::warn("job {} (VM {}): {}", s.job_id(), s.vm_id(), kInterrupted);
      save(*job);
    }
    jobs_[s.job_id()] = std::move(job);
  }
  remove_checkpoint_files(options_.checkpoint_dir, [&](const std::string& job_id) {
    return std::none_of(resume.begin(), resume.end(), [&](Job* j) { return j->state.job_id() == job_id; });
  });
  for (Job* j : resume) j->thread = std::thread([this, j] { run(*j); });
}

std::set<std::string> JobRunner::active_snapshots() {
  std::lock_guard lock(mu_);
  std::set<std::string> out;
  for (auto& [id, j] : jobs_) {
    if (!j->finished && !j->state.snapshot.empty()) out.insert(j->state.snapshot);
  }
  return out;
}

bool JobRunner::submit(JobState state) {
  std::lock_guard lock(mu_);
  if (shutting_down_) throw ShuttingDown("the VMA is shutting down: start the pass again once it is back");
  // Known in memory, or ended long enough ago to be only on disk.
  if (jobs_.count(state.job_id()) || store_.contains(state.job_id())) return false;
  reap();
  auto job = std::make_unique<Job>();
  job->state = std::move(state);
  job->state.status = VmaJobStatus::Queued;
  job->state.created = now();
  job->progress.resize(job->state.disks.size());
  save(*job);  // known before it is acknowledged, so a restart reports it
  Job& ref = *job;
  jobs_[ref.state.job_id()] = std::move(job);
  ref.thread = std::thread([this, &ref] { run(ref); });
  log::info("job {} (VM {}, {} pass, {} disks) accepted", ref.state.job_id(), ref.state.vm_id(),
            enum_name(ref.state.request.kind), ref.state.disks.size());
  return true;
}

std::optional<JobState> JobRunner::get(const std::string& job_id) {
  std::unique_lock lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) {
    lock.unlock();  // only ended jobs leave memory, and their records no longer change
    auto s = store_.load(job_id);
    if (s && s->ended > 0) s->ended_seconds_ago = static_cast<double>(std::max<int64_t>(0, now() - s->ended));
    return s;
  }
  return live_state(*it->second);
}

JobState JobRunner::live_state(const Job& job) {
  JobState s = job.state;
  if (job.ended_at) {
    s.ended_seconds_ago = seconds_since(*job.ended_at);
  } else if (s.ended_state() && s.ended > 0) {
    s.ended_seconds_ago = static_cast<double>(std::max<int64_t>(0, now() - s.ended));  // ended before a restart
  }
  for (size_t i = 0; i < s.disks.size() && i < job.progress.size(); ++i) {
    auto& p = job.progress[i];
    if (!p || s.disks[i].status != DiskStatus::Copying) continue;
    engine::ProgressSnapshot snap = p->snapshot();
    // A phase the protocol does not know (a newer engine) leaves the last one shown:
    // the phase is for people, the status is what the OMA acts on.
    if (auto phase = find_enum<DiskPhase>(snap.phase)) s.disks[i].phase = *phase;
    s.disks[i].bytes_done = static_cast<int64_t>(snap.bytes_done);
    s.disks[i].bytes_total = static_cast<int64_t>(snap.bytes_total);
    s.disks[i].throughput_bps = snap.throughput_bps;
    s.disks[i].eta_seconds = snap.eta_seconds;
  }
  return s;
}

bool JobRunner::look_at_engines(Job& job) {
  const auto interval = std::chrono::milliseconds(protocol::kProgressRevisionIntervalMs);
  const auto t = std::chrono::steady_clock::now();
  job.seen.resize(job.state.disks.size());
  bool copying = false;
  for (size_t i = 0; i < job.state.disks.size() && i < job.progress.size(); ++i) {
    auto& p = job.progress[i];
    if (!p || job.state.disks[i].status != DiskStatus::Copying) continue;
    copying = true;
    engine::ProgressSnapshot snap = p->snapshot();
    Job::Seen& seen = job.seen[i];
    bool phase = snap.phase != seen.phase;
    bool bytes = snap.bytes_done != seen.bytes && t - seen.at >= interval;
    if (!phase && !bytes) continue;
    seen = {snap.phase, snap.bytes_done, t};
    ++job.revision;
  }
  return copying;
}

std::optional<JobRunner::Revised> JobRunner::wait_for_change(const std::string& job_id, std::optional<int64_t> after,
                                                             std::chrono::milliseconds wait) {
  const auto interval = std::chrono::milliseconds(protocol::kProgressRevisionIntervalMs);
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock lock(mu_);
  for (;;) {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) {
      lock.unlock();
      auto s = get(job_id);  // only on disk: it no longer changes
      if (!s) return std::nullopt;
      return Revised{std::move(*s), 0};
    }
    Job& job = *it->second;
    bool copying = look_at_engines(job);
    auto now_t = std::chrono::steady_clock::now();
    if (!after || job.revision != *after || now_t >= deadline || waiters_released_) {
      return Revised{live_state(job), job.revision};
    }
    // The job (a unique_ptr in jobs_) stays while we wait: only reap() erases, under mu_,
    // and the loop looks it up again.
    cv_.wait_until(lock, copying ? std::min(deadline, now_t + interval) : deadline);
  }
}

void JobRunner::release_waiters() {
  {
    std::lock_guard lock(mu_);
    waiters_released_ = true;
  }
  cv_.notify_all();
}

bool JobRunner::stop(const std::string& job_id) {
  std::unique_lock lock(mu_);
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return store_.contains(job_id);  // ended long ago: nothing to stop
  Job& job = *it->second;
  if (job.finished) return true;
  job.stop_requested = true;
  cancel(job, "stopped: the pass was cancelled on request of the OMA");
  cv_.wait(lock, [&] { return job.finished; });
  return true;
}

std::optional<std::string> JobRunner::copying_job_of(const std::string& vm_id) {
  std::lock_guard lock(mu_);
  for (auto& [id, j] : jobs_) {
    if (j->finished || j->state.vm_id() != vm_id) continue;
    for (const auto& d : j->state.disks) {
      if (d.status == DiskStatus::Pending || d.status == DiskStatus::Copying) return id;
    }
  }
  return std::nullopt;
}

std::unique_lock<std::mutex> JobRunner::lock_vm(const std::string& vm_id) {
  std::shared_ptr<std::mutex> m;
  {
    std::lock_guard lock(mu_);
    auto& slot = vm_locks_[vm_id];
    if (!slot) slot = std::make_shared<std::mutex>();
    m = slot;  // entries are never erased, so the mutex outlives the lock
  }
  return std::unique_lock<std::mutex>(*m);
}

void JobRunner::shutdown() {
  std::vector<Job*> all;
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
    for (auto& [id, j] : jobs_) {
      if (!j->finished) cancel(*j, "interrupted: the VMA was stopped during this pass; start the pass again");
      all.push_back(j.get());
    }
  }
  for (Job* j : all) {
    if (j->thread.joinable()) j->thread.join();
  }
}

void JobRunner::cancel(Job& job, const std::string& reason) {
  if (job.cancel_reason.empty()) job.cancel_reason = reason;
  job.cancel = true;
  cv_.notify_all();
}

void JobRunner::reap() {
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    Job& j = *it->second;
    if (!j.finished) {
      ++it;
      continue;
    }
    if (j.thread.joinable()) j.thread.join();  // it set `finished` as its last act
    j.progress.clear();                        // get() shows the record once the job ended
    double ended_ago = j.ended_at                 ? seconds_since(*j.ended_at)
                       : j.state.ended > 0        ? static_cast<double>(now() - j.state.ended)
                                                  : 0;  // ended before a restart, time unknown: keep
    bool forget = j.state.ended_state() && (j.ended_at || j.state.ended > 0) &&
                  ended_ago >= static_cast<double>(options_.keep_ended_jobs_in_memory_seconds);
    it = forget ? jobs_.erase(it) : std::next(it);
  }
}

size_t JobRunner::jobs_in_memory() {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

void JobRunner::save(Job& job) {
  ++job.revision;
  cv_.notify_all();  // the OMA's long polls (wait_for_change) see it at once
  try {
    store_.save(job.state);
  } catch (const std::exception& e) {
    // The copy goes on; only the record after a restart would be stale.
    log::error("job {}: cannot record its state: {}", job.state.job_id(), e.what());
  }
}

void JobRunner::set_status(Job& job, VmaJobStatus status, std::optional<std::string> error) {
  std::lock_guard lock(mu_);
  job.state.status = status;
  job.state.error = std::move(error);
  if (job.state.ended_state()) {
    job.state.ended = now();
    job.ended_at = std::chrono::steady_clock::now();
  }
  save(job);
}

void JobRunner::add_phases(Job& job, size_t index, const std::vector<protocol::PhaseTime>& phases) {
  std::lock_guard lock(mu_);
  merge_phases(job.state.disks[index].phases, phases);
}

void JobRunner::fail_disk(Job& job, size_t index, const std::string& error) {
  std::lock_guard lock(mu_);
  fail_disk_locked(job, index, error);
}

void JobRunner::fail_disk_locked(Job& job, size_t index, const std::string& error) {
  mark_failed(job.state.disks[index], error);
  job.progress[index].reset();
  save(job);
}

void JobRunner::run(Job& job) {
  if (wait_for_slot(job)) {
    try {
      auto vm_lock = lock_vm(job.state.vm_id());
      execute(job);
    } catch (const std::exception& e) {
      // Whatever broke (the work directory, a thread), the job must end, and say why.
      std::string error = fmt::format("VM {}: the pass failed: {}", job.state.vm_id(), e.what());
      log::error("job {}: {}", job.state.job_id(), error);
      for (size_t i = 0; i < job.state.disks.size(); ++i) {
        bool completed;
        {
          std::lock_guard lock(mu_);
          completed = job.state.disks[i].status == DiskStatus::Completed;
        }
        if (!completed) fail_disk(job, i, error);
      }
      set_status(job, VmaJobStatus::Failed, error);
    }
    std::lock_guard lock(mu_);
    --running_;
  } else {
    std::string reason;
    {
      std::lock_guard lock(mu_);
      reason = job.cancel_reason;
    }
    for (size_t i = 0; i < job.state.disks.size(); ++i) fail_disk(job, i, reason);
    set_status(job, job.stop_requested ? VmaJobStatus::Stopped : VmaJobStatus::Failed, reason);
  }
  std::lock_guard lock(mu_);
  job.finished = true;
  cv_.notify_all();
}

bool JobRunner::wait_for_slot(Job& job) {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return job.cancel || running_ < options_.max_vms; });
  if (job.cancel) return false;
  ++running_;
  return true;
}

void JobRunner::execute(Job& job) {
  const std::string vm = job.state.vm_id();
  std::string cancelled;
  {
    std::lock_guard lock(mu_);
    if (job.cancel) cancelled = job.cancel_reason;  // while it waited for the VM
  }
  if (!cancelled.empty()) {
    for (size_t i = 0; i < job.state.disks.size(); ++i) fail_disk(job, i, cancelled);
    set_status(job, job.stop_requested ? VmaJobStatus::Stopped : VmaJobStatus::Failed, cancelled);
    return;
  }
  set_status(job, VmaJobStatus::Running);
  std::string work = options_.work_dir + "/" + job.state.job_id();
  std::filesystem::create_directories(work);
  ::chmod(work.c_str(), 0700);

  std::unique_ptr<source::Pass> pass;
  try {
    pass = open_pass(job, work);
  } catch (const std::exception& e) {
    std::string error = fmt::format("VM {}: the pass could not be prepared (snapshot, changed areas or disk "
                                    "readers): {}",
                                    vm, e.what());
    log::error("job {}: {}", job.state.job_id(), error);
    for (size_t i = 0; i < job.state.disks.size(); ++i) fail_disk(job, i, error);
    std::error_code ec;
    std::filesystem::remove_all(work, ec);
    remove_checkpoints(job.state.job_id());
    set_status(job, VmaJobStatus::Failed, error);
    return;
  }

  // The disks asked for, as the pass sees them.
  std::vector<std::optional<source::DiskPass>> todo(job.state.disks.size());
  for (size_t i = 0; i < todo.size(); ++i) {
    // Completed by the run before a restart (copied, flushed, change ID recorded).
    if (job.state.disks[i].status == DiskStatus::Completed) continue;
    const protocol::ReplicateDisk& want = job.state.request.disks[i];
    for (const auto& d : pass->disks()) {
      if (d.key != want.disk_key) continue;
      todo[i] = d;
      // Without a base the target may hold an earlier copy (a full pass again): the
      // whole disk is covered so that areas now unallocated on the source become zero.
      if (!want.change_id_base && todo[i]->request.changed_areas) {
        todo[i]->request.changed_areas.reset();
        todo[i]->reason += "; the whole disk, since the target may hold an earlier copy";
      }
    }
    if (todo[i] && want.capacity_bytes > 0 && todo[i]->capacity != static_cast<uint64_t>(want.capacity_bytes)) {
      // The OMA sized the target and chose the base for the capacity it recorded; a disk
      // grown since needs a larger target and a full pass (CBT areas past the old end
      // are not to be trusted), which only the OMA can arrange.
      fail_disk(job, i, fmt::format("VM {} disk {}: its capacity is {} bytes now, the job was made for {} bytes "
                                    "(the disk was grown since): discover the VM again, so that the OMA grows "
                                    "the target volume and runs a full pass of this disk",
                                    vm, want.disk_key.str(), todo[i]->capacity, want.capacity_bytes));
      todo[i].reset();
    } else if (!todo[i]) {
      fail_disk(job, i, fmt::format("VM {} has no disk with key {} (removed since discovery?): discover the VM "
                                    "again and start a new job",
                                    vm, want.disk_key.str()));
      std::lock_guard lock(mu_);
      cancel(job, fmt::format("not copied: disk {} of the job is missing on VM {}", want.disk_key.str(), vm));
    }
  }

  // The VM's snapshot, which every disk of the pass shares (none for a powered-off VM):
  // only what vCenter's snapshot calls took, so that a pass's Snapshot and
  // SnapshotRemoval phases are what a cutover's final pass, without one, does not take.
  for (size_t i = 0; i < todo.size(); ++i) {
    if (!todo[i]) continue;
    add_phases(job, i, {{protocol::PassPhase::Snapshot, pass->snapshot_seconds()},
                        {protocol::PassPhase::ChangeQuery, todo[i]->change_query_seconds},
                        {protocol::PassPhase::ReaderStart, todo[i]->reader_start_seconds}});
  }

  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next++) < todo.size();) {
      if (todo[i]) copy_disk(job, i, *todo[i], *pass);
    }
  };
  size_t n = std::min<size_t>(options_.max_disks_per_vm, todo.size());
  std::vector<std::thread> workers;
  for (size_t i = 0; i < n; ++i) workers.emplace_back(worker);
  for (auto& t : workers) t.join();

  std::string again;
  {
    std::lock_guard lock(mu_);
    // Not when the job was stopped meanwhile: then it ends as stopped.
    if (!job.start_over_reason.empty() && !job.stop_requested && !shutting_down_) {
      again = job.start_over_reason;
      job.cancel = false;
      job.cancel_reason.clear();
    }
    job.start_over_reason.clear();
  }
  if (!again.empty()) {
    try {
      pass->close(false);
    } catch (const std::exception& e) {  // its snapshot is gone: nothing much to remove
      log::warn("job {} (VM {}): closing the pass whose snapshot is gone: {}", job.state.job_id(), vm, e.what());
    }
    pass.reset();
    start_over(job, again);
    return execute(job);  // a new pass: as after a VMA restart whose snapshot was gone
  }

  bool all_done = std::all_of(job.state.disks.begin(), job.state.disks.end(),
                              [](const protocol::DiskProgress& d) { return d.status == DiskStatus::Completed; });
  try {
    pass->close(all_done);
  } catch (const std::exception& e) {
    // The copied data and change IDs stay valid; the snapshot is removed by the next
    // pass of this VM or the next start of the VMA.
    log::error("job {} (VM {}): removing the pass's snapshot failed: {}", job.state.job_id(), vm, e.what());
  }
  double removal = pass->snapshot_removal_seconds();
  pass.reset();
  for (size_t i = 0; i < todo.size(); ++i) {
    // Disks completed before a VMA restart belong to this snapshot too.
    if (todo[i] || job.state.disks[i].status == DiskStatus::Completed) {
      add_phases(job, i, {{protocol::PassPhase::SnapshotRemoval, removal}});
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(work, ec);
  remove_checkpoints(job.state.job_id());  // the snapshot they belong to is gone

  if (all_done) {
    set_status(job, VmaJobStatus::Completed);
    log::info("job {} (VM {}): every disk copied and flushed", job.state.job_id(), vm);
    return;
  }
  std::string error;
  {
    std::lock_guard lock(mu_);
    for (const auto& d : job.state.disks) {
      if (d.error && error.empty()) error = *d.error;
    }
    if (job.stop_requested) error = job.cancel_reason;
  }
  set_status(job, job.stop_requested ? VmaJobStatus::Stopped : VmaJobStatus::Failed, error);
  log::warn("job {} (VM {}) ended without success: {}", job.state.job_id(), vm, error);
}

std::unique_ptr<source::Pass> JobRunner::open_pass(Job& job, const std::string& work) {
  const std::string& vm = job.state.vm_id();
  source::ChangeIds stored;
  for (const auto& d : job.state.request.disks) {
    if (d.change_id_base) stored[d.disk_key] = *d.change_id_base;
  }
  auto driver = vcenter_.make_source(work);
  std::unique_ptr<source::Pass> pass;
  if (!job.state.snapshot.empty()) {  // only this thread writes it
    try {
      pass = driver->resume_pass(vm, job.state.snapshot, stored);
    } catch (const source::SnapshotGone& e) {
      start_over(job, fmt::format("the pass could not resume: {}; every disk of the pass started over on a new "
                                  "snapshot",
                                  e.what()));
    }
  }
  if (!pass) pass = driver->open_pass(vm, stored);
  std::lock_guard lock(mu_);
  job.state.snapshot = pass->snapshot_id();
  save(job);  // before any copy: a restart from here on resumes on this snapshot
  return pass;
}

// The pass is taken anew at another point in time: no disk may keep what the old
// one copied (completed disks included, so that all disks are of one point in time).
void JobRunner::start_over(Job& job, const std::string& reason) {
  log::warn("job {} (VM {}): {}", job.state.job_id(), job.state.vm_id(), reason);
  remove_checkpoints(job.state.job_id());
  std::lock_guard lock(mu_);
  for (auto& d : job.state.disks) {
    protocol::DiskProgress fresh;
    fresh.disk_key = d.disk_key;
    d = std::move(fresh);
    d.restarted = reason;
  }
  job.state.snapshot.clear();
  save(job);
}

std::string JobRunner::checkpoint_path(const std::string& job_id, const protocol::DiskKey& key) const {
  return fmt::format("{}/{}-{}.ckpt", options_.checkpoint_dir, job_id, key.str());
}

void JobRunner::remove_checkpoints(const std::string& job_id) {
  remove_checkpoint_files(options_.checkpoint_dir, [&](const std::string& id) { return id == job_id; });
}

void JobRunner::copy_disk(Job& job, size_t index, const source::DiskPass& disk, source::Pass& pass) {
  auto progress = std::make_shared<engine::Progress>();
  Endpoint target;
  source::DiskCheckpoint checkpoint;
  bool resumable = !options_.checkpoint_dir.empty() && !job.state.snapshot.empty();
  {
    std::lock_guard lock(mu_);
    if (job.cancel && !job.start_over_reason.empty()) return;  // it starts on the new snapshot
    if (job.cancel) {
      mark_failed(job.state.disks[index], job.cancel_reason);
      save(job);
      return;
    }
    protocol::DiskProgress& d = job.state.disks[index];
    d.status = DiskStatus::Copying;
    d.phase = DiskPhase::Planning;
    job.progress[index] = progress;
    bool x509 = job.state.request.nbd.tls == protocol::NbdTls::X509;
    const TlsOptions& tls = x509 ? options_.target_tls_x509 : options_.target_tls;
    if (tls.psk_file.empty() && tls.certificates_dir.empty()) {
      mark_failed(job.state.disks[index],
                  x509 ? "the OMA serves NBD with X.509 but this VMA has no client certificate (STATE/nbd-pki, "
                         "written by `vma pair` from an x509 bundle): pair it again with a bundle of this OMA"
                       : "the OMA serves NBD with a PSK but this VMA has none (STATE/nbd-psk.keys, written by "
                         "`vma pair`): pair it again with a bundle of this OMA");
      save(job);
      return;
    }
    std::string uri;
    try {
      uri = target_uri(job.state.request.nbd, job.state.request.disks[index], options_.nbd_via_port, options_.nbd_via);
    } catch (const std::exception& e) {  // NBD inside SSH and no tunnel reaches that node
      mark_failed(job.state.disks[index], e.what());
      save(job);
      return;
    }
    target = {uri, tls, "target"};
    save(job);
  }
  engine::CopyOptions o = options_.copy;
  o.progress = progress.get();
  o.cancel = &job.cancel;
  o.target_is_zero = false;  // the protocol does not say a target is fresh: zero what must be zero
  std::error_code ec;
  try {
    if (resumable) {
      checkpoint.path = checkpoint_path(job.state.job_id(), disk.key);
      checkpoint.identity = {{"job_id", job.state.job_id()},
                             {"vm_id", job.state.vm_id()},
                             {"disk_key", disk.key.str()},
                             {"snapshot", job.state.snapshot}};
    }
    source::CopyTimes times;
    engine::ProgressSnapshot snap;
    engine::CopyStats stats =
        copy_resuming(job, index, disk, pass, target, o, resumable ? &checkpoint : nullptr, times, snap);
    // A pass without a snapshot holds only while the VM stays off and unwritten: checked
    // before the disk's change ID is reported (PointInTimeLost otherwise).
    pass.check_point_in_time();
    std::lock_guard lock(mu_);
    protocol::DiskProgress& d = job.state.disks[index];
    merge_phases(d.phases, {{protocol::PassPhase::Planning, times.planning},
                            {protocol::PassPhase::Copying, times.copying},
                            {protocol::PassPhase::Flushing, times.flushing}});
    d.status = DiskStatus::Completed;
    d.phase = DiskPhase::Done;
    d.bytes_done = static_cast<int64_t>(snap.bytes_done);
    d.bytes_total = static_cast<int64_t>(snap.bytes_total);
    // This run's bytes: those resumed from the checkpoint took no time now.
    d.throughput_bps =
        stats.seconds > 0 ? static_cast<double>(snap.bytes_done - stats.bytes_resumed) / stats.seconds : 0;
    d.eta_seconds = 0;
    d.change_id = disk.change_id_to_store;  // copied and flushed: the engine flushed before returning
    d.bytes_resumed = static_cast<int64_t>(stats.bytes_resumed);
    if (!checkpoint.discarded.empty()) {
      d.restarted = fmt::format("the checkpoint of the interrupted run was not used ({}): the disk was copied from "
                                "the start",
                                checkpoint.discarded);
    }
    job.progress[index].reset();
    save(job);
    // Recorded as completed: the checkpoint has nothing more to say.
    if (resumable) std::filesystem::remove(checkpoint.path, ec);
    log::info("job {}: disk {} ({}) copied: {} bytes written, {} zeroed, {} NBD connection(s), {} reconnection(s), "
              "{} ({})",
              job.state.job_id(), disk.key.str(), disk.label, stats.bytes_written, stats.bytes_zeroed,
              stats.connections, stats.reconnects, disk.full ? "full" : "incremental", disk.reason);
  } catch (const source::PointInTimeLost& e) {
    // Not the copy's fault: the message says what happened to the VM and what to do.
    std::lock_guard lock(mu_);
    job.progress[index].reset();
    if (!job.start_over_reason.empty()) return;
    log::error("job {}: disk {} ({}): {}", job.state.job_id(), disk.key.str(), disk.label, e.what());
    bool cause = !job.cancel;
    fail_disk_locked(job, index, e.what());
    if (cause) cancel(job, fmt::format("not finished: disk {} of the same pass failed: {}", disk.key.str(), e.what()));
  } catch (const source::SnapshotGone& e) {
    std::lock_guard lock(mu_);
    start_over_later(job, fmt::format("the pass could not resume after its target went away: {}; every disk of the "
                                      "pass started over on a new snapshot",
                                      e.what()));
    job.progress[index].reset();
  } catch (const std::exception& e) {
    std::lock_guard lock(mu_);
    if (!job.start_over_reason.empty()) {  // stopped to start over: not a failure
      job.progress[index].reset();
      return;
    }
    bool cause = !job.cancel;
    std::string error = cause ? fmt::format("disk {} ({}) of VM {}: copy into {} failed: {}", disk.key.str(),
                                            disk.label, job.state.vm_id(), target.describe(), e.what())
                              : job.cancel_reason;
    log::error("job {}: {}", job.state.job_id(), error);
    // Recorded before the other disks are told to stop: whoever reads the job (the OMA
    // polls it) sees the cause no later than the disks it stopped.
    fail_disk_locked(job, index, error);
    if (cause) cancel(job, fmt::format("not finished: disk {} of the same pass failed", disk.key.str()));
  }
}

void JobRunner::start_over_later(Job& job, const std::string& reason) {
  if (job.start_over_reason.empty()) job.start_over_reason = reason;
  cancel(job, "not finished: the pass starts over on a new snapshot");
}

engine::CopyStats JobRunner::copy_resuming(Job& job, size_t index, source::DiskPass disk, source::Pass& pass,
                                           const Endpoint& target, engine::CopyOptions o,
                                           source::DiskCheckpoint* checkpoint, source::CopyTimes& times,
                                           engine::ProgressSnapshot& last) {
  using Clock = std::chrono::steady_clock;
  bool reached = false;                // the target answered this disk in this pass
  uint64_t most_done = 0;              // the furthest an attempt got
  std::optional<Clock::time_point> away;  // since when the target is away (no attempt got further)
  std::chrono::milliseconds delay = options_.resume_delay;
  for (unsigned resumes = 0;;) {
    auto progress = std::make_shared<engine::Progress>();
    {
      std::lock_guard lock(mu_);
      job.progress[index] = progress;
    }
    o.progress = progress.get();
    try {
      engine::CopyStats stats = source::copy_disk(disk, target, o, checkpoint, &times);
      last = progress->snapshot();
      if (resumes > 0) {
        log::info("job {}: disk {} ({}): completed after {} resume(s) from its checkpoint; the last run copied {} "
                  "bytes, {} were flushed before it",
                  job.state.job_id(), disk.key.str(), disk.label, resumes, last.bytes_done - stats.bytes_resumed,
                  stats.bytes_resumed);
      }
      return stats;
    } catch (const engine::EndpointLost& e) {
      engine::ProgressSnapshot at = progress->snapshot();
      // Past planning (source::copy_disk checked the target then): the target was there.
      reached = reached || at.phase != "planning";
      if (e.side() != engine::Side::Target || !checkpoint || !reached || job.cancel) throw;
      if (!away || at.bytes_done > most_done) {  // a new outage: the last attempt got further
        away = Clock::now();
        delay = options_.resume_delay;
      }
      most_done = std::max(most_done, at.bytes_done);
      auto waited = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - *away);
      if (waited >= options_.target_outage_timeout) {
        throw Error(fmt::format("its target has not answered for {} s (the VMA gives up after {} s: "
                                "--target-outage-timeout); {} resume(s) from its checkpoint before; last: {}",
                                waited.count(), options_.target_outage_timeout.count(), resumes, e.what()));
      }
      ++resumes;
      log::warn("job {}: disk {} ({}): its target went away ({}); resuming it from its checkpoint in {} ms "
                "(resume {}; the disk fails once the target has been away for {} s)",
                job.state.job_id(), disk.key.str(), disk.label, e.what(), delay.count(), resumes,
                options_.target_outage_timeout.count());
      {
        std::unique_lock lock(mu_);
        if (cv_.wait_for(lock, delay, [&] { return job.cancel.load(); })) throw;
      }
      delay = std::min(delay * 2, options_.resume_delay_max);
      // The reader may have stopped serving while the copy was broken: nbdkit 1.32's rate
      // filter (--read-rate-limit) aborts when a client goes away with reads asleep in it
      // ("raw_send_socket: Assertion `sock >= 0' failed"). The pass's snapshot must still
      // be there (else SnapshotGone: the pass starts over).
      bool serves = true;
      try {
        engine::NbdConnection::open(Endpoint{disk.uri, {}, "source"});
      } catch (const Error& r) {
        serves = false;
        log::warn("job {}: disk {} ({}): its reader no longer serves ({}); restarting it", job.state.job_id(),
                  disk.key.str(), disk.label, r.what());
      }
      // A reader restarted here is this thread's child (it dies with the thread: the
      // parent-death signal), and only this thread's copy of this disk reads from it.
      disk.uri = pass.resume_disk(disk.key, !serves);
    }
  }
}

}  // namespace mk::vma
