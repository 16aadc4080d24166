// JobManager: runs replication jobs as persisted state machines.
//
//   preparing (preflight, volumes) -> exporting (exports, verified over NBD) -> copying
//   (VMA replicates; progress polled until every disk completed and the VMA closed the
//   pass) -> committing (change IDs) -> completed
//   any state -> failed (with its reason) | cancelled
//   once the VMA was asked to copy: -> unknown | cancelling -> failed | cancelled
//
// Each disk's phase times (snapshot ... snapshot removal, as the VMA measured them) are
// stored as they arrive; the OMA adds "reporting", from the VMA's end of the job to
// the OMA's record of the pass as completed.
//
// A pass whose copy the VMA may be running ends only when no writer is left: the VMA
// confirms that the copy stopped (stop), or, when it cannot be reached (or a replicate
// call timed out), the export server closes every connection to the job's exports
// (ExportBackend::cut_off). Until then the job holds its VM, so no pass, cutover or test
// failover starts under a live writer; an OMA restarted meanwhile goes on trying.
//
// Preflight reads the VM afresh from its VMA (one VM, not the inventory) and asks the
// target (JobOptions::target, CloudStack's limits and offerings) too; any finding of
// either refuses the pass before anything is created. A pass whose volumes do not fit
// beside those attached to the OMA's VM (the cloud caps data volumes per VM) waits,
// still preparing, with its phase and a "waiting for data-volume slots" step saying how
// many it needs and which limit; it goes on once volumes are freed (another VM cut
// over, a volume detached). Jobs check slots and attach volumes one at a time, so two
// never count the same free slot.
//
// Every transition is written to the database before the next step starts, so an OMA
// restarted at any moment resumes each active job from its last state (recover()):
// preparing and exporting are idempotent and simply run again, copying resumes polling
// (the VMA keeps copying while the OMA is down), committing commits again (a no-op for
// disks already committed). A VMA restarted during the copy resumes the pass itself
// (vma/runner): the job follows the new VMA instance and logs why a disk started over
// instead of resuming. A job whose VMA no longer knows it, restarted without resuming
// it, or stays silent longer than vma_timeout fails with that reason; none stays
// active forever.
// A job completes only when every disk has completed and all change IDs are committed.
// A disk counts as completed only when its export saw it written: before the VMA is
// asked to copy, each export's count of durable written bytes (ExportBackend::
// written_bytes) is recorded as the disk's baseline; when the VMA reports the disk
// completed with bytes_done bytes, the export must have seen at least that many since
// the baseline, or the disk and the job fail and nothing is committed. bytes_done, not
// bytes_done - bytes_resumed: the resumed bytes were written and flushed in this pass
// too (a checkpoint belongs to one job), and a VMA could claim everything resumed.
// Retried writes make the count larger, never smaller. A backend that cannot count
// (nbd-server) leaves no baseline: the job records that its disks were not checked.
//
// Progress is pushed, not polled: while copying, the runner long-polls the VMA
// (VmaClient::wait_progress, at most progress_wait per call), which answers as soon as
// the job changed there; a VMA that does not hold the call (no revision in its answer)
// is polled every poll_interval as before. Status and phase changes of a disk (its end
// among them) are written to the database at once, byte progress at most every
// progress_record_interval per job; every change is told to the JobObserver at once
// (the event stream), with the newest bytes. shutdown() and cancel() end a runner's
// long poll at once (CallAbort: the HTTP request is shut down), so neither waits for it.
//
// At most one active job per VM (JobRepository::create_job enforces it); jobs of different VMs run
// concurrently, one thread each. Does not own its collaborators. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "oma/db/job_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/exports/export_manager.h"
#include "oma/jobs/job_observer.h"
#include "oma/jobs/target_checks.h"
#include "oma/vma/vma_client.h"
#include "oma/volumes/volume_manager.h"

namespace mk::oma {

struct JobOptions {
  std::chrono::milliseconds poll_interval{1000};  // between progress calls to a VMA that does not hold them
  // How long the VMA may hold a progress call until something changes (a long poll, at
  // most protocol::kMaxProgressWaitMs); 0: poll every poll_interval.
  std::chrono::milliseconds progress_wait{5000};
  // Byte progress goes to the database at most this often per job (status and phase
  // changes at once).
  std::chrono::milliseconds progress_record_interval{1000};
  std::chrono::milliseconds vma_timeout{60000};  // longest silence from the VMA before failing
  std::string nbd_host = "127.0.0.1";            // where the VMA reaches the export server
  int nbd_port = 10809;
  protocol::NbdTls nbd_tls = protocol::NbdTls::Psk;  // how VMAs authenticate to it (X.509: certificates)
  // The client of the VMA that owns a VM (one OMA, several VMAs: see oma/pairing); null
  // or unset: the JobManager's own VmaClient (the default VMA).
  std::function<std::shared_ptr<VmaClient>(const std::string& vm_id)> vma_for_vm;
  // Tests only: called on a custom job's thread right after its end is recorded, where
  // a concurrent start would see the VM's new status (the race of issue 16).
  std::function<void(const std::string& job_id)> after_finish;
  TargetChecks* target = nullptr;  // the target's preflight and volume slots; null: none (local volumes)
  std::chrono::milliseconds slot_poll_interval{5000};  // how often a waiting pass looks for free slots
  // On an OMA node of several: whether this node runs the VM's jobs (its volumes are
  // placed here, or nowhere yet). recover() resumes only those; unset: every job.
  std::function<bool(const std::string& vm_id)> runs_here;
  // On an OMA node of several: called when a pass starts preparing (also when resumed in
  // that state), before anything touches its volumes. handed_off: the VM's volumes move
  // to another node (its node is drained, or an operator moved it: nodes/node_failover.h),
  // which runs the pass (adopt()); this runner records `message` and leaves the job as it
  // is. Otherwise a non-empty `message` is a warning (a move that is due cannot happen).
  struct HandOff {
    bool handed_off = false;
    std::string message;
  };
  std::function<HandOff(const JobRecord& job)> hand_off;
  // Called on the pass's thread once a pass has completed and released its VM (the
  // automatic boot check after an incremental pass: oma/cutover/boot_check_service.h).
  // What it throws is logged, never the pass's failure.
  std::function<void(const JobRecord& job)> pass_completed;
};

// Thrown by a custom job's body: the job fails with this message and the VM gets
// `vm_status` (e.g. replicated again after a cutover that rolled back).
class JobFailed : public mk::Error {
 public:
  JobFailed(const std::string& message, VmStatus vm_status) : mk::Error(message), vm_status_(vm_status) {}
  VmStatus vm_status() const { return vm_status_; }

 private:
  VmStatus vm_status_;
};

class JobManager {
 public:
  JobManager(VmRepository& vms, JobRepository& jobs, VolumeManager& volumes, ExportManager& exports, VmaClient& vma,
             JobOptions options);
  ~JobManager();

  // Creates a pass (full or incremental) for a known VM and starts it; returns its
  // id. Throws UsageError (another kind; incremental without a committed change ID on
  // every disk), NotFound (unknown VM) or Conflict (the VM already has an active job).
  std::string start(const std::string& vm_id, JobKind kind);
  // Jobs of kinds run by another component (cutover, test failover): the job claims
  // the VM like a replication (one active job per VM; status running) and `body` runs
  // on the job's own thread. `body` returns the VM status to record when it succeeds;
  // a JobFailed it throws says which VM status to record on failure. With
  // `with_final_pass` the job gets one disk row per disk, incremental from the
  // committed change IDs (UsageError if a disk has none), so that the body can run
  // replicate_pass(). Such a job cannot be cancelled, and one found active after a
  // restart (its body is gone) fails once the VMA's copy of its final pass, if any, has
  // stopped, with a message saying where it was, the source's power state and what to
  // do; the VM's status says it was interrupted, and the job can be started again.
  using JobBody = std::function<VmStatus(const JobRecord& job)>;
  std::string start_custom(const std::string& vm_id, JobKind kind, bool with_final_pass, JobBody body);
  // Runs an incremental pass of a custom job's disks, change IDs committed, on the
  // calling (the job's) thread. Throws mk::Error if it fails or the OMA is stopping.
  void replicate_pass(const std::string& job_id);

  // Asks an active pass to stop; it ends cancelled once no writer is left (see the
  // top), "cancelling" until then. Throws NotFound or Conflict (already finished).
  void cancel(const std::string& job_id);
  // Resumes every job the database says is active (on a node: of the VMs it runs).
  // Returns how many. Call once at start. A runner whose job was ended by another node
  // meanwhile (a failover failed it) stops at its next check without writing anything.
  int recover();
  // Runs an active pass that another runner handed off (JobOptions::hand_off) once its
  // volumes are on this node. Returns false, doing nothing, when this manager runs it
  // already or it is not an active pass. Throws Error when the OMA is stopping.
  bool adopt(const std::string& job_id);
  // Stops all runners without changing their jobs (they resume on the next start).
  void shutdown();

  uint64_t poller_errors() const { return poller_errors_.load(); }
  // Who is told of every change of the jobs this manager runs (null: nobody). When
  // set_observer returns, the previous observer is called no more.
  void set_observer(JobObserver* observer);

  // The VMA that serves `vm_id` (its paired VMA, or the default one).
  std::shared_ptr<VmaClient> vma_for(const std::string& vm_id);
  // The target's checks (null with local volumes).
  TargetChecks* target_checks() const { return options_.target; }

 private:
  void launch(const std::string& job_id);
  std::vector<JobDiskRecord> job_disk_rows(const JobRecord& job, const std::vector<DiskRecord>& disks,
                                           bool incremental);
  void run_custom(const JobRecord& job);
  // A custom job found active after a restart (its body is gone): the VMA's copy of its
  // final pass stopped first, then failed as interrupted (interrupted_error), the VM's
  // status saying so (cutover_interrupted ...), so that the operator can start it again.
  void end_interrupted(const JobRecord& job);
  // A boot check or an inspection found active after a restart: failed, the VM
  // replicated again (it changed nothing but overlays, which the OMA removes at start).
  void end_interrupted_check(const JobRecord& job);
  // Where the job was, the source VM's power state (read from the VMA) and what to do.
  std::string interrupted_error(const JobRecord& job);
  void run(const std::string& job_id);
  void preflight(const JobRecord& job);  // the VMA's and the target's findings refuse the job before anything is created
  void follow_grown_disks(const JobRecord& job, const protocol::DiscoveredVm& vm);  // full pass of a grown disk
  std::string check_target(const JobRecord& job, std::vector<protocol::PreflightFinding>& findings);  // -> notes
  std::unique_lock<std::mutex> wait_for_volume_slots(const JobRecord& job);  // held until the volumes are attached
  void prepare(const JobRecord& job);
  void export_and_replicate(const JobRecord& job);
  using SteadyTime = std::chrono::steady_clock::time_point;
  // Until every disk completed and the VMA closed the pass; returns when the VMA's job
  // ended, on our clock (its answer's arrival minus its ended_seconds_ago).
  std::optional<SteadyTime> poll(const JobRecord& job);
  // Why the VMA's report that disk `d` completed cannot be believed (the export saw
  // fewer durable written bytes since the pass started than the VMA says it copied), or
  // nullopt when it checks out (or cannot be checked: no baseline).
  // Records the export's written-bytes count as the disk's baseline (once per job).
  void record_written_baseline(const JobRecord& job, const std::string& disk_key, const std::string& export_name);
  std::optional<std::string> unverified_completion(const JobRecord& job, const JobDiskRecord& d,
                                                   const protocol::DiskProgress& dp);
  void note_resume(const std::string& job_id, const std::string& disk_key, const protocol::DiskProgress& dp,
                   std::set<std::string>& noted);
  void commit(const JobRecord& job, std::optional<SteadyTime> vma_ended = std::nullopt);
  // Adds each disk's "reporting" phase: from the VMA's end of the job to now, just
  // before the OMA records the pass as done. Nothing when `vma_ended` is unknown.
  void record_reporting(const std::string& job_id, std::optional<SteadyTime> vma_ended);
  void check_cancel(const std::string& job_id);
  // Whether the VMA may copy for the job: its replicate call was sent (vma_instance set).
  bool writer_possible(const std::string& job_id);
  // Ends a pass (cancelled or failed with `error`), after stop_writer if it may have one.
  void end_pass(const std::string& job_id, JobStatus end, const std::string& error);
  // Holds the job in `holding` (cancelling or unknown) until the VMA confirms its copy
  // stopped or the export server cut the VMA off the job's exports; retries until
  // then. Throws ShuttingDown (the job stays held and resumes at the next start).
  void stop_writer(const JobRecord& job, JobStatus holding, const std::string& error);
  bool sleep_for(std::chrono::milliseconds d);  // false when shutting down
  // Writes to the database that the observer is told of.
  void add_event(const std::string& job_id, EventLevel level, const std::string& message);
  void set_status(const std::string& job_id, JobStatus status, const std::string& phase);
  void set_status(const std::string& job_id, JobStatus status, const std::string& phase, const std::string& error);
  void finish(const std::string& job_id, JobStatus status, const std::optional<std::string>& error,
              std::optional<VmStatus> vm_status = std::nullopt);
  // Tells the observer the job as it is now: its record, with the live bytes of a copy
  // that poll() follows and has not recorded yet. Errors are logged.
  void notify(const std::string& job_id);
  std::function<void()> notifier(const std::string& job_id) {
    return [this, job_id] { notify(job_id); };
  }
  // poll(): one call to the VMA for the job's progress, which shutdown() and cancel()
  // can end at once.
  protocol::JobProgress ask_progress(VmaClient& vma, const std::string& job_id, std::optional<int64_t> revision,
                                     bool& aborted);
  // poll(): writes the disks' progress when a status, phase or error changed, or
  // progress_record_interval after the last write; otherwise keeps it as the job's live
  // bytes for notify().
  void record_progress(const std::string& job_id, const std::vector<JobDiskRecord>& recorded,
                       const std::vector<JobDiskRecord>& now, SteadyTime& last_write);

  VmRepository& vms_;
  JobRepository& jobs_;
  VolumeManager& volumes_;
  ExportManager& exports_;
  VmaClient& vma_;
  JobOptions options_;
  std::mutex mu_;  // guards runners_, stopping_
  std::condition_variable cv_;
  bool stopping_ = false;
  std::map<std::string, std::thread> runners_;
  std::map<std::string, JobBody> bodies_;  // custom jobs not yet started
  std::vector<std::string> finished_;  // runners that have returned, to be joined
  std::atomic<uint64_t> poller_errors_{0};
  std::mutex volume_slots_mu_;  // held from a slot check until that job's volumes are attached
  std::map<std::string, std::shared_ptr<CallAbort>> calls_;  // progress calls in flight per job; guarded by mu_
  // Jobs poll() follows, with the disks' progress not recorded yet (empty: none).
  std::mutex live_mu_;  // guards live_
  std::map<std::string, std::vector<JobDiskRecord>> live_;
  std::mutex observer_mu_;  // guards observer_; held while it is called (one call at a time)
  JobObserver* observer_ = nullptr;
};

}  // namespace mk::oma
