// JobRepository: the OMA's jobs and what they leave behind: each job (replication_jobs)
// with its disks (job_disks), the claim a running job holds on its VM (active_jobs),
// its log (job_steps, job_events), the change IDs its passes committed (cbt_history)
// and where each disk's pass spent its time (job_disk_phases).
//
// Invariants, each enforced in one transaction here and backed by the schema:
//  - a VM has at most one active job: create_job inserts the active_jobs row (its
//    primary key is the VM) and records the job and its disks, or throws Conflict
//    naming the active job and stores nothing; finish_job deletes the claim;
//  - while it holds the VM, vm_contexts.current_job_id names the job and the VM's
//    status is "replicating" (create_job); finish_job clears it and sets the VM's
//    status from the job's end (replicated, replication_failed, replication_cancelled)
//    or to the status its caller gives (a cutover's cut_over): the claim and the status
//    change together, so no job can claim the VM in between and see a stale status;
//  - a VM that has been cut over or is in a test failover takes no new job but the
//    test failover's cleanup: create_job reads the status inside its transaction and
//    throws Conflict (a check before the claim alone would race a finishing job);
//  - a job that ends failed or cancelled leaves no disk pending or copying: finish_job
//    ends each such disk failed with the reason ("stopped: disk 2001 failed", "stopped:
//    the job was cancelled"), in the same transaction (the OMA stops polling the VMA
//    when a disk fails, so the others' last reports would stay "copying" forever);
//  - change IDs are committed for every disk of a job or for none: commit_change_ids
//    checks that every uncommitted disk completed with a change ID, then writes each
//    to vm_disks.change_id and cbt_history and marks the job disk committed;
//    committing again is a no-op.
// These transactions write vm_contexts and vm_disks columns, whose rows VmRepository
// owns (see vm_repository.h). Unknown jobs throw NotFound.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"
#include "oma/db/vm_repository.h"
#include "protocol/enums.h"
#include "protocol/messages.h"

namespace mk::oma {

// What a job does. Full and incremental passes are run by the JobManager itself; the
// others by another component on a job (cutover/). Stored in replication_jobs.kind.
enum class JobKind { Full, Incremental, Cutover, TestFailover, TestFailoverCleanup, BootCheck, Inspection };
const EnumTable<JobKind>& enum_table(JobKind);
// Full or incremental: a replication pass (cancellable; counted in pass statistics).
bool is_pass(JobKind kind);
// A boot check or an inspection: reads overlays of the replicas and changes nothing in
// the target, so a node that takes over a dead node's VM has nothing to undo for it.
bool only_reads_replicas(JobKind kind);

// Where a job is. A pass goes preparing -> exporting -> copying -> committing; other
// kinds are "running" (their phase says more). A pass that ends after its copy was
// asked of the VMA first passes through "cancelling" (cancelled) or "unknown" (failed:
// the VMA may still be writing) until the VMA confirmed the copy stopped or the OMA cut
// the VMA off the exports; it keeps its VM meanwhile. Stored in replication_jobs.status.
enum class JobStatus {
  Preparing, Exporting, Copying, Committing, Running, Completed, Failed, Cancelled, Cancelling, Unknown
};
const EnumTable<JobStatus>& enum_table(JobStatus);
// Completed, failed or cancelled: the job has ended and released its VM.
bool is_terminal(JobStatus status);

// A step of a job's log (job_steps.status).
enum class StepStatus { Running, Completed, Failed, Skipped };
const EnumTable<StepStatus>& enum_table(StepStatus);

// An event of a job's log (job_events.level).
enum class EventLevel { Info, Warn, Error };
const EnumTable<EventLevel>& enum_table(EventLevel);

// Times are ms since the Unix epoch. `phase` is text for the operator ("copying: 1/2
// disks completed", a cutover step's name): code never branches on it.
struct JobRecord {
  std::string job_id, vm_id;
  JobKind kind = JobKind::Full;
  JobStatus status = JobStatus::Preparing;
  std::string phase;
  int64_t bytes_done = 0, bytes_total = 0;
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> error;
  bool cancel_requested = false;
  int64_t created_at = 0, updated_at = 0;
  std::optional<int64_t> finished_at;
};

// One disk of one job. `status` and `phase` are the VMA's (protocol/enums.h): where the
// copy is and what it does (planning, copying, ...), stored as it reports them.
struct JobDiskRecord {
  std::string job_id, disk_key, export_name;
  protocol::DiskStatus status = protocol::DiskStatus::Pending;  // as the VMA reports it (job_disks.status)
  protocol::DiskPhase phase = protocol::DiskPhase::Pending;  // job_disks.phase
  int64_t unit = 0, bytes_done = 0, bytes_total = 0;
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> change_id_base, change_id_new, error;
  bool committed = false;
  // The export's durable written bytes (ExportBackend::written_bytes) before the VMA was
  // asked to copy; nullopt when not recorded (the backend cannot count).
  std::optional<int64_t> written_baseline;
  // Where the pass's time went for this disk, in PassPhase order (job_disk_phases):
  // the VMA's measurements and the OMA's "reporting".
  std::vector<protocol::PhaseTime> phases;
};

// All recorded phase times of one phase, over every disk of every pass (for /metrics).
struct PhaseTotal {
  protocol::PassPhase phase = protocol::PassPhase::Snapshot;
  double seconds = 0;
  int64_t count = 0;
};

struct StepRecord {
  std::string job_id, name;
  StepStatus status = StepStatus::Running;
  int64_t seq = 0, started_at = 0;
  std::optional<std::string> message;
  std::optional<int64_t> finished_at;
};

struct EventRecord {
  std::string job_id;
  EventLevel level = EventLevel::Info;
  std::string message;
  int64_t seq = 0, at = 0;
};

// One committed change ID of one disk (cbt_history).
struct CbtRecord {
  std::string vm_id, disk_key, job_id, change_id;
  int64_t committed_at = 0;
};

// When each disk's current change ID was committed.
struct ChangeIdCommit {
  std::string vm_id, disk_key;
  int64_t committed_at = 0;
};

class JobRepository {
 public:
  explicit JobRepository(db::Database& db) : db_(db) {}

  // Claims the VM and records the job and its disks (see the invariants above).
  void create_job(const JobRecord& job, const std::vector<JobDiskRecord>& disks);
  std::optional<JobRecord> find_job(const std::string& job_id);
  JobRecord get_job(const std::string& job_id);
  // Oldest first; "" / nullopt: any VM / status.
  std::vector<JobRecord> list_jobs(const std::string& vm_id = "", std::optional<JobStatus> status = std::nullopt);
  std::vector<JobRecord> active_jobs();
  std::vector<JobDiskRecord> job_disks(const std::string& job_id);  // by unit, with their phases
  // Replaces the disk's phase times (in PassPhase order) in one transaction.
  void set_disk_phases(const std::string& job_id, const std::string& disk_key,
                       const std::vector<protocol::PhaseTime>& phases);
  void set_job_status(const std::string& job_id, JobStatus status, const std::string& phase);
  // The same, and the error the job will end with (kept across an OMA restart).
  void set_job_status(const std::string& job_id, JobStatus status, const std::string& phase,
                      const std::string& error);
  void set_job_disk_export(const std::string& job_id, const std::string& disk_key, const std::string& export_name);
  // Records the disk export's written-bytes count before the pass copies; a no-op when
  // one is recorded already (a resumed job keeps the count from before its first copy).
  void set_written_baseline(const std::string& job_id, const std::string& disk_key, int64_t bytes);
  // The disk's pass becomes a full one (no base change ID): its disk was grown.
  void clear_job_disk_base(const std::string& job_id, const std::string& disk_key);
  void update_disk_progress(const JobDiskRecord& d);
  // Recomputes the job's totals from its disks (sum of bytes and throughput, max ETA).
  void roll_up_progress(const std::string& job_id);
  void request_cancel(const std::string& job_id);
  // The VMA instance (its boot id) that accepted the job: a different one later means
  // the VMA restarted and lost the job.
  void set_vma_instance(const std::string& job_id, const std::string& instance);
  std::optional<std::string> vma_instance(const std::string& job_id);
  // Ends the job (`status` must be terminal) and releases its VM, whose status becomes
  // `vm_status` if given, else the one that follows `status` (see the invariants).
  void finish_job(const std::string& job_id, JobStatus status, const std::optional<std::string>& error,
                  std::optional<VmStatus> vm_status = std::nullopt);
  // Throws Error if a disk has not completed or has no change ID; nothing is committed.
  void commit_change_ids(const std::string& job_id);
  std::vector<CbtRecord> cbt_history(const std::string& vm_id, const std::string& disk_key);  // oldest first

  // A job's log. begin_step returns the step's sequence number.
  int64_t begin_step(const std::string& job_id, const std::string& name);
  void end_step(const std::string& job_id, int64_t seq, StepStatus status, const std::string& message = "");
  void add_event(const std::string& job_id, EventLevel level, const std::string& message);
  std::vector<StepRecord> list_steps(const std::string& job_id);
  std::vector<EventRecord> list_events(const std::string& job_id);

  // For the VM list: every ended pass (full/incremental) oldest first, and when each
  // disk's newest change ID was committed.
  std::vector<JobRecord> ended_passes();
  std::vector<ChangeIdCommit> latest_change_id_commits();
  // For the downtime prediction (pass_stats.h): per incremental pass (job id), the seconds
  // its snapshot took to create and remove (PassPhase Snapshot + SnapshotRemoval, the
  // slowest disk's: the disks share one snapshot). Passes without such records are absent.
  std::map<std::string, double> incremental_snapshot_seconds();
  // Jobs changed at or after `since_ms` (updated_at), for the live event stream.
  std::vector<JobRecord> jobs_updated_since(int64_t since_ms);

  // For /metrics: jobs per status; bytes copied by all jobs and the summed throughput
  // of active jobs.
  std::vector<std::pair<JobStatus, int64_t>> jobs_by_status();
  std::pair<int64_t, double> job_totals();
  // Per phase: the summed seconds and how many disk passes recorded it.
  std::vector<PhaseTotal> phase_totals();

 private:
  // Inside finish_job's transaction: disks neither completed nor failed end failed, saying why.
  void end_unfinished_disks(const std::string& job_id, JobStatus status, const std::optional<std::string>& error);

  db::Database& db_;
};

}  // namespace mk::oma
