// JobRunner: runs the VMA's replication jobs in-process with the copy engine.
//
// A job is one pass over one VM: it waits for one of `max_vms` slots, takes the VM's
// lock (one pass per VM at a time, also against snapshot cleanup: the OMA may start the
// next pass as soon as every disk reported completion, while the previous one is still
// removing its snapshot), opens a VmwareSource
// pass (snapshot, changed areas, one reader per disk), and copies its disks into the
// OMA's exports over NBD with TLS, up to `max_disks_per_vm` disks at once. A disk
// reports its new change ID only after the engine copied and flushed every range of
// it. When a disk fails, the job's other disks are cancelled (the OMA commits all disks
// of a pass or none). Whatever happens, the pass is closed, which removes its snapshot.
//
// Each disk's record carries the time the pass spent in each phase (protocol
// PassPhase, steady clock): snapshot, change query and reader start once the pass is
// open, planning, copying and flushing once its copy ended, snapshot removal once the
// pass is closed, which is before the job's status says it ended. A resumed pass
// measures only what its own run did.
//
// Every change of status is persisted (JobStore) before it is reported. An ended job
// leaves memory after keep_ended_jobs_in_memory_seconds (checked when a job is
// submitted); from then on get(), stop() and a repeated submit() answer from its record. Resume, not
// restart: each disk's copy records the ranges the target has flushed in a checkpoint
// (checkpoint_dir/<job>-<disk key>.ckpt, engine::Checkpoint) tied to the job, the disk,
// the pass's snapshot, the plan and the target. recover() starts again the jobs that a
// killed VMA left queued or running: a pass whose snapshot still exists is opened
// again on it and every disk not completed continues from its checkpoint (ranges not
// recorded as flushed are copied again, so nothing is skipped); when the snapshot is
// gone, every disk starts over on a new snapshot and says why (DiskProgress::restarted).
// A disk reports its change ID only once all its ranges are written and flushed.
// Within a running VMA, a disk whose target went away after the copy had reached it (an
// SSH tunnel cut, the OMA or its export server restarting: engine::EndpointLost on the
// target) resumes from its checkpoint once the target answers again, with backoff, for
// at most target_outage_timeout; its reader is restarted first if it no longer serves.
// Errors the source or the target answered with, and a lost source, fail the disk as
// before. When the pass's snapshot is gone by then, every disk starts over on a new
// snapshot and says why, as after a VMA restart.
// A pass's Snapshot and SnapshotRemoval phases are what vCenter's snapshot calls took
// (source::Pass::snapshot_seconds()): 0 for a pass without a snapshot (a powered-off VM,
// source/vmware_source.h). In a pass without a snapshot, before each disk reports its
// change ID the VM must still be off and its disks unwritten
// (Pass::check_point_in_time()), or the disk fails with the reason and the pass with it;
// a resume that finds them changed starts over, as when a snapshot is gone.
// Without a checkpoint_dir, such jobs fail as kInterrupted, never completed. stop()
// cancels a job and returns once its snapshot is gone; a job that ends removes its
// checkpoints.
//
// Owns its job threads; they end in shutdown() (also run by the destructor), which
// cancels every job. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "engine/copier.h"
#include "common/endpoint.h"
#include "engine/progress.h"
#include "source/pass_copy.h"
#include "vma/runner/job_state.h"
#include "vma/vcenter/vcenter.h"

namespace mk::vma {

// What a job that was running when the VMA stopped reports, per disk and as a whole.
inline constexpr const char* kInterrupted = "interrupted: the VMA restarted during this pass; start the pass again";

struct RunnerOptions {
  int max_vms = 4;
  int max_disks_per_vm = 4;
  std::string work_dir;            // existing private directory: per-job reader sockets
  TlsOptions target_tls;       // the OMA's NBD TLS PSK (empty: none)
  TlsOptions target_tls_x509;  // or the VMA's X.509 client certificates (empty: none), as the request says
  int nbd_via_port = 0;            // > 0: NBD through the SSH local forward at 127.0.0.1:<it>
  // Set: NBD through the local forward of the tunnel to the node that serves the request's
  // NBD target (several OMA nodes); throws when none does. Overrides nbd_via_port.
  std::function<int(const protocol::NbdTarget&)> nbd_via;
  engine::CopyOptions copy;        // pipeline shape (progress, cancel and target_is_zero are set per disk)
  // Existing private directory for the disks' checkpoints; "" = interrupted passes are
  // not resumed (recover() fails them).
  std::string checkpoint_dir;
  // A disk whose target went away (see the top) tries again after resume_delay, doubling
  // up to resume_delay_max, and fails once the target has been away this long.
  std::chrono::seconds target_outage_timeout{300};
  std::chrono::milliseconds resume_delay{1000};
  std::chrono::milliseconds resume_delay_max{30000};
  int64_t keep_ended_jobs_seconds = 7 * 24 * 3600;
  // How long an ended job stays in memory; after that its record on disk (JobStore)
  // answers for it. Without this a VMA that runs passes for weeks grows by every pass
  // it ever ran (seen in a 30-minute soak: ~3 KiB a pass).
  int64_t keep_ended_jobs_in_memory_seconds = 600;
};

// Another job of the same VM is active (for operations that need the VM idle).
class JobConflict : public Error {
 public:
  using Error::Error;
};
// The runner is shutting down and takes no new job.
class ShuttingDown : public Error {
 public:
  using Error::Error;
};

class JobRunner {
 public:
  JobRunner(RunnerOptions options, VCenter& vcenter, JobStore& store);
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Loads the persisted jobs and resumes those left queued or running (see the top);
  // without a checkpoint_dir they fail as kInterrupted. Removes checkpoints of jobs
  // that do not resume.
  void recover();
  // The snapshots of jobs not yet ended (resumed ones among them), which a clean-up of
  // leftover snapshots must keep.
  std::set<std::string> active_snapshots();
  // Persists and starts `job`; false (nothing started) when the job id is known. A job
  // of a VM whose previous job is still closing its pass waits for it (the VM's lock).
  // Throws ShuttingDown after shutdown().
  bool submit(JobState job);
  // The job with live per-disk progress; nullopt when unknown.
  std::optional<JobState> get(const std::string& job_id);
  // The job as get() shows it and its revision: a number raised at once by every change
  // of the job that is recorded (status, a disk's status, phase times, its end: each
  // save) and, while a disk copies, by its engine's phase or, at most every
  // protocol::kProgressRevisionIntervalMs, its bytes. Starts at 0 in each run of the VMA.
  struct Revised {
    JobState state;
    int64_t revision = 0;
  };
  // Waits until the job's revision differs from `after` (at once without one, or when it
  // differs already), at most `wait`, or until release_waiters(); then answers as get().
  // Waits on the runner's condition variable; while a disk of the job copies it also
  // wakes every kProgressRevisionIntervalMs to look at the engine's counters, which
  // nothing signals. nullopt when the job is unknown. A job only on disk (ended long
  // ago) never changes: revision 0.
  std::optional<Revised> wait_for_change(const std::string& job_id, std::optional<int64_t> after,
                                         std::chrono::milliseconds wait);
  // Ends every wait_for_change() at once, and later ones without waiting (the API is
  // stopping). Idempotent.
  void release_waiters();
  // Cancels the job and waits until it ended and its snapshot was removed. False when
  // the job is unknown; true (and nothing done) when it had already ended.
  bool stop(const std::string& job_id);
  // A job of the VM that still has disks to copy (queued or copying), if any. A job
  // whose disks all ended but that is still closing its pass does not count: taking
  // the VM's lock waits for it.
  std::optional<std::string> copying_job_of(const std::string& vm_id);
  // The VM's lock: held by a job for its whole pass, and by snapshot cleanup.
  std::unique_lock<std::mutex> lock_vm(const std::string& vm_id);
  // Cancels every job and waits for all of them.
  void shutdown();
  // How many jobs the runner holds in memory (running ones and those ended within
  // keep_ended_jobs_in_memory_seconds; older ones are read from the store when asked).
  size_t jobs_in_memory();

 private:
  struct Job {
    JobState state;                                        // guarded by mu_
    std::vector<std::shared_ptr<engine::Progress>> progress;  // per disk while copying; guarded by mu_
    std::atomic<bool> cancel{false};
    std::string cancel_reason;                             // guarded by mu_
    std::string start_over_reason;  // set: the pass's snapshot is gone, every disk starts over; guarded by mu_
    bool stop_requested = false;                           // guarded by mu_
    bool finished = false;                                 // the thread is done; guarded by mu_
    std::optional<std::chrono::steady_clock::time_point> ended_at;  // status became an end one; guarded by mu_
    std::thread thread;
    // wait_for_change(): the revision and, per disk, what the engine's counters said
    // when they last raised it. Guarded by mu_.
    struct Seen {
      std::string phase;
      uint64_t bytes = 0;
      std::chrono::steady_clock::time_point at{};
    };
    int64_t revision = 0;
    std::vector<Seen> seen;
  };

  void run(Job& job);
  bool wait_for_slot(Job& job);
  void execute(Job& job);
  // The job's pass: resumed on its snapshot when it has one and the VM still does,
  // else a new one (and every disk starts over, saying why).
  std::unique_ptr<source::Pass> open_pass(Job& job, const std::string& work);
  void start_over(Job& job, const std::string& reason);
  void copy_disk(Job& job, size_t index, const source::DiskPass& disk, source::Pass& pass);
  // source::copy_disk, resumed from `checkpoint` while the target is away (see the top);
  // job.progress[index] is the current attempt's progress, `last` its end.
  engine::CopyStats copy_resuming(Job& job, size_t index, source::DiskPass disk, source::Pass& pass,
                                  const Endpoint& target, engine::CopyOptions o, source::DiskCheckpoint* checkpoint,
                                  source::CopyTimes& times, engine::ProgressSnapshot& last);
  // Stops the pass's other disks so that every disk starts over on a new snapshot. mu_ held.
  void start_over_later(Job& job, const std::string& reason);
  std::string checkpoint_path(const std::string& job_id, const protocol::DiskKey& key) const;
  void remove_checkpoints(const std::string& job_id);
  void cancel(Job& job, const std::string& reason);  // mu_ held
  void fail_disk(Job& job, size_t index, const std::string& error);
  void fail_disk_locked(Job& job, size_t index, const std::string& error);  // mu_ held
  void set_status(Job& job, protocol::VmaJobStatus status, std::optional<std::string> error = std::nullopt);
  // Appends the times of phases that ended to the disk's record (not saved: the next
  // change of status saves them).
  void add_phases(Job& job, size_t index, const std::vector<protocol::PhaseTime>& phases);
  void save(Job& job);  // mu_ held; raises the job's revision and wakes its waiters
  // The job as get() shows it (its live engine counters included). mu_ held.
  JobState live_state(const Job& job);
  // Raises the revision when a copying disk's engine changed phase, or its bytes since
  // the last raise at least kProgressRevisionIntervalMs ago. mu_ held. Returns whether a
  // disk of the job is copying (its counters change without a signal).
  bool look_at_engines(Job& job);
  // Joins ended job threads, drops their engine counters and forgets jobs that ended
  // more than keep_ended_jobs_in_memory_seconds ago. mu_ held.
  void reap();

  RunnerOptions options_;
  VCenter& vcenter_;
  JobStore& store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::unique_ptr<Job>> jobs_;
  std::map<std::string, std::shared_ptr<std::mutex>> vm_locks_;
  int running_ = 0;
  bool shutting_down_ = false;
  bool waiters_released_ = false;  // guarded by mu_
};

}  // namespace mk::vma
