#include "oma/db/job_repository.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "oma/db/table.h"
#include "oma/db/vm_repository.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;
using db::Value;

const EnumTable<JobKind>& enum_table(JobKind) {
  static const EnumTable<JobKind> t{"job kind", {{JobKind::Full, "full"}, {JobKind::Incremental, "incremental"},
    {JobKind::Cutover, "cutover"}, {JobKind::TestFailover, "test_failover"},
    {JobKind::TestFailoverCleanup, "test_failover_cleanup"}, {JobKind::BootCheck, "boot_check"},
    {JobKind::Inspection, "inspection"}}};
  return t;
}

bool is_pass(JobKind kind) { return kind == JobKind::Full || kind == JobKind::Incremental; }
bool only_reads_replicas(JobKind kind) { return kind == JobKind::BootCheck || kind == JobKind::Inspection; }

const EnumTable<JobStatus>& enum_table(JobStatus) {
  static const EnumTable<JobStatus> t{"job status", {{JobStatus::Preparing, "preparing"},
    {JobStatus::Exporting, "exporting"}, {JobStatus::Copying, "copying"}, {JobStatus::Committing, "committing"},
    {JobStatus::Running, "running"}, {JobStatus::Completed, "completed"}, {JobStatus::Failed, "failed"},
    {JobStatus::Cancelled, "cancelled"}, {JobStatus::Cancelling, "cancelling"}, {JobStatus::Unknown, "unknown"}}};
  return t;
}

bool is_terminal(JobStatus s) {
  return s == JobStatus::Completed || s == JobStatus::Failed || s == JobStatus::Cancelled;
}

const EnumTable<StepStatus>& enum_table(StepStatus) {
  static const EnumTable<StepStatus> t{"step status", {{StepStatus::Running, "running"},
    {StepStatus::Completed, "completed"}, {StepStatus::Failed, "failed"}, {StepStatus::Skipped, "skipped"}}};
  return t;
}

const EnumTable<EventLevel>& enum_table(EventLevel) {
  static const EnumTable<EventLevel> t{"event level", {{EventLevel::Info, "info"}, {EventLevel::Warn, "warn"},
    {EventLevel::Error, "error"}}};
  return t;
}

namespace {

// vma_instance is read and written on its own (set_vma_instance), so it is not a field.
const Table<JobRecord> kJobs{"replication_jobs", {column("job_id", &JobRecord::job_id),
    column("vm_id", &JobRecord::vm_id), column("kind", &JobRecord::kind), column("status", &JobRecord::status),
    column("phase", &JobRecord::phase), column("bytes_done", &JobRecord::bytes_done),
    column("bytes_total", &JobRecord::bytes_total), column("throughput_bps", &JobRecord::throughput_bps),
    column("eta_seconds", &JobRecord::eta_seconds), column("error", &JobRecord::error),
    column("cancel_requested", &JobRecord::cancel_requested), column("created_at", &JobRecord::created_at),
    column("updated_at", &JobRecord::updated_at), column("finished_at", &JobRecord::finished_at)}, 1};

const Table<JobDiskRecord> kJobDisks{"job_disks", {column("job_id", &JobDiskRecord::job_id),
    column("disk_key", &JobDiskRecord::disk_key), column("unit", &JobDiskRecord::unit),
    column("export_name", &JobDiskRecord::export_name), column("status", &JobDiskRecord::status),
    column("phase", &JobDiskRecord::phase), column("bytes_done", &JobDiskRecord::bytes_done),
    column("bytes_total", &JobDiskRecord::bytes_total), column("throughput_bps", &JobDiskRecord::throughput_bps),
    column("eta_seconds", &JobDiskRecord::eta_seconds), column("change_id_base", &JobDiskRecord::change_id_base),
    column("change_id_new", &JobDiskRecord::change_id_new), column("committed", &JobDiskRecord::committed),
    column("error", &JobDiskRecord::error), column("written_baseline", &JobDiskRecord::written_baseline)}, 2};

const Table<StepRecord> kSteps{"job_steps", {column("job_id", &StepRecord::job_id), column("seq", &StepRecord::seq),
    column("name", &StepRecord::name), column("status", &StepRecord::status), column("message", &StepRecord::message),
    column("started_at", &StepRecord::started_at), column("finished_at", &StepRecord::finished_at)}, 2};

const Table<EventRecord> kEvents{"job_events", {column("job_id", &EventRecord::job_id),
    column("seq", &EventRecord::seq), column("logged_at", &EventRecord::at), column("level", &EventRecord::level),
    column("message", &EventRecord::message)}, 2};

const Table<CbtRecord> kCbtHistory{"cbt_history", {column("vm_id", &CbtRecord::vm_id),
    column("disk_key", &CbtRecord::disk_key), column("job_id", &CbtRecord::job_id),
    column("change_id", &CbtRecord::change_id), column("committed_at", &CbtRecord::committed_at)}, 3};

// The VM's status once a job that held it has ended.
VmStatus vm_status_after(JobStatus end) {
  switch (end) {
    case JobStatus::Completed: return VmStatus::Replicated;
    case JobStatus::Cancelled: return VmStatus::ReplicationCancelled;
    default: return VmStatus::ReplicationFailed;
  }
}

// Claims the VM's row for `job` (inside create_job's transaction): current job and
// status "replicating", unless the VM's replicas have left the OMA's hands (cut over,
// or in a test failover, which only its cleanup job may take). One conditional UPDATE,
// not a read and a write: on MariaDB a plain SELECT reads the transaction's snapshot,
// which may predate a finish_job that just set cut_over; an UPDATE reads the latest
// committed row and holds its lock until commit.
// A cutover whose rollback did not finish (cutover_failed) may have left the volumes on
// a CloudStack VM: only a cutover-kind job (the rollback that finishes it; the cutover
// service refuses a new cutover itself) may take it.
void claim_vm(db::Database& db, const JobRecord& job) {
  // A VM whose volumes are moving between OMA nodes (a takeover or a move not finished):
  // a pass is handed to the node they move to (NodeFailover::move_before_pass), but a
  // cutover or test failover would work on volumes that are on no node yet, or undo a
  // dead node's job that the takeover is undoing itself.
  if (!is_pass(job.kind) &&
      !db.query("SELECT 1 FROM vm_takeovers WHERE vm_id = ? AND finished_at IS NULL", {job.vm_id}).empty()) {
    throw Conflict(fmt::format("VM {}'s volumes are moving between OMA nodes (GET /api/v1/vms/{}/placement shows the "
                               "takeover or move): start the {} once they are attached and exported on their node",
                               job.vm_id, job.vm_id, job.kind));
  }
  std::string settled = job.kind == JobKind::TestFailoverCleanup ? "" : enum_name(VmStatus::TestFailover);
  std::string unfinished = job.kind == JobKind::Cutover ? "" : enum_name(VmStatus::CutoverFailed);
  if (db.exec("UPDATE vm_contexts SET current_job_id = ?, status = ?, updated_at = ? WHERE vm_id = ? "
              "AND status NOT IN (?, ?, ?)",
              {job.job_id, enum_name(VmStatus::Replicating), now_ms(), job.vm_id, enum_name(VmStatus::CutOver),
               settled, unfinished}) == 1)
    return;
  auto rows = db.query("SELECT status, name FROM vm_contexts WHERE vm_id = ?", {job.vm_id});
  if (rows.empty()) return;  // no such VM: nothing to claim (callers check that the VM exists)
  if (rows[0].str(0) == enum_name(VmStatus::CutOver)) {
    throw Conflict(fmt::format("VM {} ({}) has been cut over: no more replication, cutover or test failover",
                               job.vm_id, rows[0].str(1)));
  }
  if (rows[0].str(0) == enum_name(VmStatus::CutoverFailed)) {
    throw Conflict(fmt::format("VM {} ({}) has a cutover whose rollback did not finish (its volumes may be on a "
                               "CloudStack VM): its failed cutover job says what is left; fix the cause, then POST "
                               "/api/v1/vms/{}/cutover/rollback",
                               job.vm_id, rows[0].str(1), job.vm_id));
  }
  throw Conflict(fmt::format("VM {} ({}) is in a test failover: clean it up first (POST "
                             "/api/v1/vms/{}/test-failover/cleanup)",
                             job.vm_id, rows[0].str(1), job.vm_id));
}

// The next sequence number of a job's steps or events (call inside a transaction).
int64_t next_seq(db::Database& db, const char* table, const std::string& job_id) {
  return db.query(fmt::format("SELECT COALESCE(MAX(seq), 0) + 1 FROM {} WHERE job_id = ?", table), {job_id})[0].i64(0);
}

}  // namespace

// --- Jobs and their disks --------------------------------------------------------------

void JobRepository::create_job(const JobRecord& job, const std::vector<JobDiskRecord>& disks) {
  JobRecord row = job;
  row.updated_at = row.created_at;
  row.cancel_requested = false;
  row.finished_at.reset();
  db_.transaction([&] {
    claim_vm(db_, job);
    try {
      db_.exec("INSERT INTO active_jobs (vm_id, job_id) VALUES (?, ?)", {job.vm_id, job.job_id});
    } catch (const db::ConstraintError&) {
      auto rows = db_.query("SELECT job_id FROM active_jobs WHERE vm_id = ?", {job.vm_id});
      throw Conflict(fmt::format("VM {} already has an active job {}: wait for it or cancel it first", job.vm_id,
                                 rows.empty() ? "?" : rows[0].str(0)));
    }
    kJobs.insert(db_, row);
    for (JobDiskRecord d : disks) {
      d.committed = false;
      kJobDisks.insert(db_, d);
    }
  });
}

std::optional<JobRecord> JobRepository::find_job(const std::string& job_id) {
  return kJobs.query_one(db_, "WHERE job_id = ?", {job_id});
}

JobRecord JobRepository::get_job(const std::string& job_id) {
  return found(find_job(job_id), fmt::format("job {} does not exist (list jobs with GET /api/v1/jobs)", job_id));
}

std::vector<JobRecord> JobRepository::list_jobs(const std::string& vm_id, std::optional<JobStatus> status) {
  std::string where = "WHERE 1 = 1";
  std::vector<Value> params;
  if (!vm_id.empty()) {
    where += " AND vm_id = ?";
    params.emplace_back(vm_id);
  }
  if (status) {
    where += " AND status = ?";
    params.emplace_back(enum_name(*status));
  }
  return kJobs.query(db_, where + " ORDER BY created_at, job_id", params);
}

std::vector<JobRecord> JobRepository::active_jobs() {
  return kJobs.query(db_, "WHERE job_id IN (SELECT job_id FROM active_jobs) ORDER BY created_at");
}

std::vector<JobDiskRecord> JobRepository::job_disks(const std::string& job_id) {
  auto disks = kJobDisks.query(db_, "WHERE job_id = ? ORDER BY unit", {job_id});
  if (disks.empty()) return disks;
  for (const auto& r : db_.query("SELECT disk_key, phase, seconds FROM job_disk_phases WHERE job_id = ? "
                                 "ORDER BY disk_key, seq",
                                 {job_id})) {
    auto phase = find_enum<protocol::PassPhase>(r.str(1));
    if (!phase) continue;  // a phase a newer OMA wrote: not ours to show
    for (auto& d : disks) {
      if (d.disk_key == r.str(0)) d.phases.push_back({*phase, r.dbl(2)});
    }
  }
  return disks;
}

void JobRepository::set_disk_phases(const std::string& job_id, const std::string& disk_key,
                                    const std::vector<protocol::PhaseTime>& phases) {
  db_.transaction([&] {
    db_.exec("DELETE FROM job_disk_phases WHERE job_id = ? AND disk_key = ?", {job_id, disk_key});
    for (const auto& p : phases) {
      db_.exec("INSERT INTO job_disk_phases (job_id, disk_key, phase, seq, seconds) VALUES (?, ?, ?, ?, ?)",
               {job_id, disk_key, std::string(enum_name(p.phase)), static_cast<int64_t>(p.phase), p.seconds});
    }
  });
}

std::vector<PhaseTotal> JobRepository::phase_totals() {
  std::vector<PhaseTotal> out;
  for (const auto& r : db_.query("SELECT phase, SUM(seconds), COUNT(*) FROM job_disk_phases GROUP BY phase")) {
    if (auto phase = find_enum<protocol::PassPhase>(r.str(0))) out.push_back({*phase, r.dbl(1), r.i64(2)});
  }
  std::sort(out.begin(), out.end(), [](const PhaseTotal& a, const PhaseTotal& b) { return a.phase < b.phase; });
  return out;
}

void JobRepository::set_job_status(const std::string& job_id, JobStatus status, const std::string& phase) {
  db_.exec("UPDATE replication_jobs SET status = ?, phase = ?, updated_at = ? WHERE job_id = ?",
           {enum_name(status), phase, now_ms(), job_id});
}

void JobRepository::set_job_status(const std::string& job_id, JobStatus status, const std::string& phase,
                                   const std::string& error) {
  db_.exec("UPDATE replication_jobs SET status = ?, phase = ?, error = ?, updated_at = ? WHERE job_id = ?",
           {enum_name(status), phase, error, now_ms(), job_id});
}

void JobRepository::set_job_disk_export(const std::string& job_id, const std::string& disk_key,
                                        const std::string& export_name) {
  db_.exec("UPDATE job_disks SET export_name = ? WHERE job_id = ? AND disk_key = ?", {export_name, job_id, disk_key});
}

void JobRepository::set_written_baseline(const std::string& job_id, const std::string& disk_key, int64_t bytes) {
  db_.exec("UPDATE job_disks SET written_baseline = ? WHERE job_id = ? AND disk_key = ? AND written_baseline IS NULL",
           {bytes, job_id, disk_key});
}

void JobRepository::clear_job_disk_base(const std::string& job_id, const std::string& disk_key) {
  db_.exec("UPDATE job_disks SET change_id_base = NULL WHERE job_id = ? AND disk_key = ?", {job_id, disk_key});
}

void JobRepository::update_disk_progress(const JobDiskRecord& d) {
  kJobDisks.update(db_, d,
                          {"status", "phase", "bytes_done", "bytes_total", "throughput_bps", "eta_seconds",
                           "change_id_new", "error"});
}

void JobRepository::roll_up_progress(const std::string& job_id) {
  db_.exec("UPDATE replication_jobs SET "
           "bytes_done = (SELECT COALESCE(SUM(bytes_done), 0) FROM job_disks WHERE job_id = ?), "
           "bytes_total = (SELECT COALESCE(SUM(bytes_total), 0) FROM job_disks WHERE job_id = ?), "
           "throughput_bps = (SELECT COALESCE(SUM(throughput_bps), 0) FROM job_disks WHERE job_id = ?), "
           "eta_seconds = (SELECT COALESCE(MAX(eta_seconds), 0) FROM job_disks WHERE job_id = ?), "
           "updated_at = ? WHERE job_id = ?",
           {job_id, job_id, job_id, job_id, now_ms(), job_id});
}

void JobRepository::request_cancel(const std::string& job_id) {
  db_.exec("UPDATE replication_jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?", {now_ms(), job_id});
}

void JobRepository::set_vma_instance(const std::string& job_id, const std::string& instance) {
  db_.exec("UPDATE replication_jobs SET vma_instance = ? WHERE job_id = ?", {instance, job_id});
}

std::optional<std::string> JobRepository::vma_instance(const std::string& job_id) {
  auto rows = db_.query("SELECT vma_instance FROM replication_jobs WHERE job_id = ?", {job_id});
  return rows.empty() ? std::nullopt : rows[0].opt(0);
}

void JobRepository::finish_job(const std::string& job_id, JobStatus status, const std::optional<std::string>& error,
                               std::optional<VmStatus> vm_status) {
  if (!is_terminal(status))
    throw Error(fmt::format("job {}: {} is not an end state (a bug in the caller)", job_id, status));
  db_.transaction([&] {
    JobRecord j = get_job(job_id);
    int64_t t = now_ms();
    j.status = status;
    j.phase = enum_name(status);
    j.error = error;
    j.finished_at = j.updated_at = t;
    kJobs.update(db_, j, {"status", "phase", "error", "finished_at", "updated_at"});
    if (status != JobStatus::Completed) end_unfinished_disks(job_id, status, error);
    db_.exec("DELETE FROM active_jobs WHERE job_id = ?", {job_id});
    db_.exec("UPDATE vm_contexts SET current_job_id = NULL, status = ?, updated_at = ? "
             "WHERE vm_id = ? AND current_job_id = ?",
             {enum_name(vm_status.value_or(vm_status_after(status))), t, j.vm_id, job_id});
  });
}

void JobRepository::end_unfinished_disks(const std::string& job_id, JobStatus status,
                                         const std::optional<std::string>& error) {
  auto disks = job_disks(job_id);
  std::vector<std::string> failed;
  for (const auto& d : disks) {
    if (d.status == protocol::DiskStatus::Failed) failed.push_back(d.disk_key);
  }
  std::string reason = !failed.empty()                ? fmt::format("stopped: disk {} failed", fmt::join(failed, ", "))
                       : status == JobStatus::Cancelled ? std::string("stopped: the job was cancelled")
                                                        : "stopped: the job failed: " + error.value_or("no reason given");
  for (auto& d : disks) {
    if (d.status == protocol::DiskStatus::Completed || d.status == protocol::DiskStatus::Failed) continue;
    d.status = protocol::DiskStatus::Failed;
    d.phase = protocol::DiskPhase::Failed;
    d.throughput_bps = 0;
    d.eta_seconds = 0;
    d.error = reason;
    kJobDisks.update(db_, d, {"status", "phase", "throughput_bps", "eta_seconds", "error"});
  }
}

void JobRepository::commit_change_ids(const std::string& job_id) {
  db_.transaction([&] {
    JobRecord j = get_job(job_id);
    // A job that ended meanwhile (another node failed it when it took the VM over) must
    // never commit: the next pass runs from the change IDs committed before it.
    if (is_terminal(j.status) && j.status != JobStatus::Completed)
      throw Error(fmt::format("job {} has ended ({}{}): its change IDs are not committed", job_id, j.status,
                              j.error ? ": " + *j.error : std::string()));
    auto disks = job_disks(job_id);
    if (disks.empty()) throw Error(fmt::format("job {} has no disks: nothing to commit", job_id));
    int64_t t = now_ms();
    for (auto& d : disks) {
      if (d.committed) continue;  // committing twice (recovery) is a no-op
      if (d.status != protocol::DiskStatus::Completed || !d.change_id_new || d.change_id_new->empty()) {
        throw Error(fmt::format("job {} VM {} disk {} has not completed with a change ID (status {}): "
                                "no change ID of this job is committed",
                                job_id, j.vm_id, d.disk_key, d.status));
      }
      db_.exec("UPDATE vm_disks SET change_id = ?, updated_at = ? WHERE vm_id = ? AND disk_key = ?",
               {*d.change_id_new, t, j.vm_id, d.disk_key});
      kCbtHistory.insert(db_, {j.vm_id, d.disk_key, job_id, *d.change_id_new, t});
      d.committed = true;
      kJobDisks.update(db_, d, {"committed"});
    }
  });
}

std::vector<CbtRecord> JobRepository::cbt_history(const std::string& vm_id, const std::string& disk_key) {
  return kCbtHistory.query(db_, "WHERE vm_id = ? AND disk_key = ? ORDER BY committed_at, job_id", {vm_id, disk_key});
}

// --- Steps and events ------------------------------------------------------------------

int64_t JobRepository::begin_step(const std::string& job_id, const std::string& name) {
  StepRecord s;
  s.job_id = job_id;
  s.name = name;
  s.started_at = now_ms();
  db_.transaction([&] {
    s.seq = next_seq(db_, "job_steps", job_id);
    kSteps.insert(db_, s);
  });
  return s.seq;
}

void JobRepository::end_step(const std::string& job_id, int64_t seq, StepStatus status, const std::string& message) {
  StepRecord s;
  s.job_id = job_id;
  s.seq = seq;
  s.status = status;
  if (!message.empty()) s.message = message;
  s.finished_at = now_ms();
  kSteps.update(db_, s, {"status", "message", "finished_at"});
}

void JobRepository::add_event(const std::string& job_id, EventLevel level, const std::string& message) {
  EventRecord e{job_id, level, message, 0, now_ms()};
  db_.transaction([&] {
    e.seq = next_seq(db_, "job_events", job_id);
    kEvents.insert(db_, e);
  });
}

std::vector<StepRecord> JobRepository::list_steps(const std::string& job_id) {
  return kSteps.query(db_, "WHERE job_id = ? ORDER BY seq", {job_id});
}

std::vector<EventRecord> JobRepository::list_events(const std::string& job_id) {
  return kEvents.query(db_, "WHERE job_id = ? ORDER BY seq", {job_id});
}

// --- Views over many jobs --------------------------------------------------------------

std::vector<JobRecord> JobRepository::ended_passes() {
  return kJobs.query(db_, "WHERE kind IN (?, ?) AND finished_at IS NOT NULL ORDER BY finished_at, job_id",
                      {enum_name(JobKind::Full), enum_name(JobKind::Incremental)});
}

std::vector<ChangeIdCommit> JobRepository::latest_change_id_commits() {
  std::vector<ChangeIdCommit> out;
  for (const auto& r : db_.query("SELECT vm_id, disk_key, MAX(committed_at) FROM cbt_history "
                                 "GROUP BY vm_id, disk_key ORDER BY vm_id, disk_key"))
    out.push_back({r.str(0), r.str(1), r.i64(2)});
  return out;
}

std::map<std::string, double> JobRepository::incremental_snapshot_seconds() {
  std::map<std::string, double> out;
  for (const auto& r : db_.query("SELECT job_id, disk_key, SUM(seconds) FROM job_disk_phases WHERE phase IN (?, ?) "
                                 "AND job_id IN (SELECT job_id FROM replication_jobs WHERE kind = ?) "
                                 "GROUP BY job_id, disk_key",
                                 {std::string(enum_name(protocol::PassPhase::Snapshot)),
                                  std::string(enum_name(protocol::PassPhase::SnapshotRemoval)),
                                  enum_name(JobKind::Incremental)})) {
    double& seconds = out[r.str(0)];
    seconds = std::max(seconds, r.dbl(2));
  }
  return out;
}

std::vector<JobRecord> JobRepository::jobs_updated_since(int64_t since_ms) {
  return kJobs.query(db_, "WHERE updated_at >= ? ORDER BY updated_at, job_id", {since_ms});
}

std::vector<std::pair<JobStatus, int64_t>> JobRepository::jobs_by_status() {
  std::vector<std::pair<JobStatus, int64_t>> out;
  for (const auto& r : db_.query("SELECT status, COUNT(*) FROM replication_jobs GROUP BY status ORDER BY status")) {
    auto status = find_enum<JobStatus>(r.str(0));
    if (!status) {
      throw Error(fmt::format("replication_jobs: {} row(s): column status: {} (written by a newer OMA, or edited by "
                              "hand?)",
                              r.i64(1), unknown_enum_message<JobStatus>(r.str(0))));
    }
    out.emplace_back(*status, r.i64(1));
  }
  return out;
}

std::pair<int64_t, double> JobRepository::job_totals() {
  auto bytes = db_.query("SELECT COALESCE(SUM(bytes_done), 0) FROM replication_jobs")[0].i64(0);
  auto bps = db_.query("SELECT COALESCE(SUM(throughput_bps), 0) FROM replication_jobs WHERE job_id IN "
                       "(SELECT job_id FROM active_jobs)")[0].dbl(0);
  return {bytes, bps};
}

}  // namespace mk::oma
