// Store: the OMA's data-access layer, the only code that writes SQL against the schema.
//
// Every invariant that protects data is enforced in a transaction here (and backed by
// a constraint in the schema): a VM has at most one active job (create_job fails with
// Conflict otherwise), a volume belongs to one (VM, disk key), an export to one volume
// and one (VM, unit), and change IDs are committed for all disks of a job at once, or
// not at all. Unknown ids throw NotFound.
//
// The Store does not own the Database (the caller keeps it alive). Thread-safe: each
// method is one statement or one transaction on the thread-safe Database.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "oma/db/database.h"
#include "oma/db/records.h"

namespace mk::oma {

int64_t now_ms();

class Store {
 public:
  explicit Store(db::Database& db) : db_(db) {}
  db::Database& database() { return db_; }

  // VMs and their disks. add_vm throws Conflict if the VM exists or two disks share a
  // key or a unit.
  void add_vm(const VmRecord& vm, const std::vector<DiskRecord>& disks);
  std::optional<VmRecord> find_vm(const std::string& vm_id);
  VmRecord get_vm(const std::string& vm_id);
  std::vector<VmRecord> list_vms();
  std::vector<DiskRecord> list_disks(const std::string& vm_id);
  void set_vm_status(const std::string& vm_id, const std::string& status);

  // Volumes, by identity (VM, disk key). insert_volume also links it to the disk.
  std::optional<VolumeRecord> find_volume(const std::string& vm_id, const std::string& disk_key);
  void insert_volume(const VolumeRecord& v);
  std::vector<VolumeRecord> list_volumes();

  // Exports: insert_export records the export, its (VM, unit) mapping and links it to
  // the disk, in one transaction.
  std::optional<ExportRecord> find_export(const std::string& name);
  void insert_export(const ExportRecord& e, const std::string& vm_id, int64_t unit, const std::string& disk_key);
  void update_export_device(const std::string& name, const std::string& device_path, int64_t size_bytes);
  void mark_export_verified(const std::string& name);
  std::vector<ExportRecord> list_exports();
  std::optional<std::string> export_for(const std::string& vm_id, int64_t unit);

  // Jobs. create_job claims the VM (active_jobs) and records the job and its disks.
  void create_job(const JobRecord& job, const std::vector<JobDiskRecord>& disks);
  std::optional<JobRecord> find_job(const std::string& job_id);
  JobRecord get_job(const std::string& job_id);
  std::vector<JobRecord> list_jobs(const std::string& vm_id = "", const std::string& status = "");
  std::vector<JobRecord> active_jobs();
  std::vector<JobDiskRecord> job_disks(const std::string& job_id);
  void set_job_status(const std::string& job_id, const std::string& status, const std::string& phase);
  void set_job_disk_export(const std::string& job_id, const std::string& disk_key, const std::string& export_name);
  void update_disk_progress(const JobDiskRecord& d);
  // Recomputes the job's totals from its disks (sum of bytes and throughput, max ETA).
  void roll_up_progress(const std::string& job_id);
  void request_cancel(const std::string& job_id);
  // The VMA instance (its boot id) that accepted the job: a different one later means
  // the VMA restarted and lost the job.
  void set_vma_instance(const std::string& job_id, const std::string& instance);
  std::optional<std::string> vma_instance(const std::string& job_id);
  // Marks the job terminal (completed, failed or cancelled), releases the VM.
  void finish_job(const std::string& job_id, const std::string& status, const std::optional<std::string>& error);
  // Stores each disk's new change ID on vm_disks and in cbt_history, all or nothing.
  // Throws Error if a disk has not completed or has no change ID.
  void commit_change_ids(const std::string& job_id);
  std::vector<std::pair<std::string, std::string>> cbt_history(const std::string& vm_id, const std::string& disk_key);

  // A job's log.
  int64_t begin_step(const std::string& job_id, const std::string& name);
  void end_step(const std::string& job_id, int64_t seq, const std::string& status, const std::string& message = "");
  void add_event(const std::string& job_id, const std::string& level, const std::string& message);
  std::vector<StepRecord> list_steps(const std::string& job_id);
  std::vector<EventRecord> list_events(const std::string& job_id);

  // API tokens, stored as SHA-256 hashes.
  void insert_token(const TokenRecord& t, const std::string& token_hash);
  std::optional<TokenRecord> find_live_token(const std::string& token_hash);
  std::vector<TokenRecord> list_tokens();
  void revoke_token(const std::string& token_id);
  int64_t count_tokens();

  // Settings (values already encrypted by the caller when `encrypted`).
  void put_setting(const std::string& name, const std::string& value, bool encrypted);
  std::optional<std::pair<std::string, bool>> get_setting(const std::string& name);
  std::vector<std::pair<std::string, bool>> list_settings();  // names and encrypted flags

  // A VM's NICs (replaced as a whole), in key order.
  void set_vm_nics(const std::string& vm_id, const std::vector<NicRecord>& nics);
  std::vector<NicRecord> list_nics(const std::string& vm_id);

  // What a cutover or test failover built (one per VM and kind).
  void put_failover(const FailoverRecord& f);
  std::optional<FailoverRecord> find_failover(const std::string& vm_id, const std::string& kind);
  void delete_failover(const std::string& vm_id, const std::string& kind);

  // VMAs and pairing codes (src/oma/pairing). enroll_vma uses the code (unused, not
  // expired at `now`) and records the VMA with the next free tunnel port >= port_base,
  // in one transaction; it throws Conflict naming why the code cannot be used.
  void insert_pairing_code(const PairingCodeRecord& c);
  VmaRecord enroll_vma(const std::string& code_hash, int64_t now, VmaRecord vma, int64_t port_base);
  std::optional<VmaRecord> find_vma(const std::string& vma_id);
  VmaRecord get_vma(const std::string& vma_id);
  std::vector<VmaRecord> list_vmas();
  // pending -> approved, pending|approved -> revoked; Conflict otherwise.
  void set_vma_state(const std::string& vma_id, const std::string& state);
  // The VMA a VM belongs to (the one that discovered it); nullopt: the default VMA.
  std::optional<std::string> vm_vma(const std::string& vm_id);
  void set_vm_vma(const std::string& vm_id, const std::optional<std::string>& vma_id);

  // Schedules (one per VM): repeat incremental passes every interval_minutes.
  // put_schedule inserts or replaces; delete_schedule throws NotFound if there is none.
  void put_schedule(const ScheduleRecord& s);
  std::optional<ScheduleRecord> find_schedule(const std::string& vm_id);
  std::vector<ScheduleRecord> list_schedules();
  void delete_schedule(const std::string& vm_id);
  // Records what a due schedule did and when it runs next.
  void record_schedule_run(const std::string& vm_id, int64_t at, int64_t next_run_at,
                           const std::optional<std::string>& job_id, const std::string& result);

  // For the VM list: every ended pass (full/incremental) oldest first, and when each
  // disk's newest change ID was committed.
  std::vector<JobRecord> ended_passes();
  std::vector<ChangeIdCommit> latest_change_id_commits();
  // Jobs changed at or after `since_ms` (updated_at), for the live event stream.
  std::vector<JobRecord> jobs_updated_since(int64_t since_ms);

  // Counts for /metrics.
  std::vector<std::pair<std::string, int64_t>> jobs_by_status();
  int64_t count_exports();
  // Bytes copied by all jobs, and the summed throughput of active jobs.
  std::pair<int64_t, double> job_totals();

 private:
  db::Database& db_;
};

}  // namespace mk::oma
