#include "oma/db/store.h"

#include <fmt/format.h>

#include <chrono>

#include "oma/errors.h"

namespace mk::oma {

using db::Row;
using db::Value;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {

Value opt(const std::optional<std::string>& s) { return s ? Value(*s) : Value(); }
Value opt(const std::optional<int64_t>& n) { return n ? Value(*n) : Value(); }
std::optional<int64_t> opt_i64(const Row& r, size_t i) {
  return r.is_null(i) ? std::nullopt : std::optional<int64_t>(r.i64(i));
}

const char* kVmCols =
    "vm_id, name, vcenter, datacenter, cpus, memory_mb, guest_os, power_state, status, current_job_id, "
    "created_at, updated_at";
VmRecord vm_from(const Row& r) {
  VmRecord v;
  v.vm_id = r.str(0);
  v.name = r.str(1);
  v.vcenter = r.str(2);
  v.datacenter = r.str(3);
  v.cpus = r.i64(4);
  v.memory_mb = r.i64(5);
  v.guest_os = r.str(6);
  v.power_state = r.str(7);
  v.status = r.str(8);
  v.current_job_id = r.opt(9);
  v.created_at = r.i64(10);
  v.updated_at = r.i64(11);
  return v;
}

const char* kDiskCols = "vm_id, disk_key, unit, label, capacity_bytes, volume_id, export_name, change_id";
DiskRecord disk_from(const Row& r) {
  DiskRecord d;
  d.vm_id = r.str(0);
  d.disk_key = r.str(1);
  d.unit = r.i64(2);
  d.label = r.str(3);
  d.capacity_bytes = r.i64(4);
  d.volume_id = r.opt(5);
  d.export_name = r.opt(6);
  d.change_id = r.opt(7);
  return d;
}

const char* kVolumeCols = "volume_id, vm_id, disk_key, backend, size_bytes, device_path, status, created_at";
VolumeRecord volume_from(const Row& r) {
  return {r.str(0), r.str(1), r.str(2), r.str(3), r.str(5), r.str(6), r.i64(4), r.i64(7)};
}

const char* kExportCols = "export_name, volume_id, device_path, backend, size_bytes, created_at, verified_at";
ExportRecord export_from(const Row& r) {
  return {r.str(0), r.str(1), r.str(2), r.str(3), r.i64(4), r.i64(5), opt_i64(r, 6)};
}

const char* kJobCols =
    "job_id, vm_id, kind, status, phase, bytes_done, bytes_total, throughput_bps, eta_seconds, error, "
    "cancel_requested, created_at, updated_at, finished_at";
JobRecord job_from(const Row& r) {
  JobRecord j;
  j.job_id = r.str(0);
  j.vm_id = r.str(1);
  j.kind = r.str(2);
  j.status = r.str(3);
  j.phase = r.str(4);
  j.bytes_done = r.i64(5);
  j.bytes_total = r.i64(6);
  j.throughput_bps = r.dbl(7);
  j.eta_seconds = r.dbl(8);
  j.error = r.opt(9);
  j.cancel_requested = r.i64(10) != 0;
  j.created_at = r.i64(11);
  j.updated_at = r.i64(12);
  j.finished_at = opt_i64(r, 13);
  return j;
}

const char* kJobDiskCols =
    "job_id, disk_key, unit, export_name, status, phase, bytes_done, bytes_total, throughput_bps, eta_seconds, "
    "change_id_base, change_id_new, committed, error";
JobDiskRecord job_disk_from(const Row& r) {
  JobDiskRecord d;
  d.job_id = r.str(0);
  d.disk_key = r.str(1);
  d.unit = r.i64(2);
  d.export_name = r.str(3);
  d.status = r.str(4);
  d.phase = r.str(5);
  d.bytes_done = r.i64(6);
  d.bytes_total = r.i64(7);
  d.throughput_bps = r.dbl(8);
  d.eta_seconds = r.dbl(9);
  d.change_id_base = r.opt(10);
  d.change_id_new = r.opt(11);
  d.committed = r.i64(12) != 0;
  d.error = r.opt(13);
  return d;
}

}  // namespace

// --- VMs ---------------------------------------------------------------------------

void Store::add_vm(const VmRecord& vm, const std::vector<DiskRecord>& disks) {
  int64_t t = now_ms();
  try {
    db_.transaction([&] {
      db_.exec(fmt::format("INSERT INTO vm_contexts ({}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", kVmCols),
               {vm.vm_id, vm.name, vm.vcenter, vm.datacenter, vm.cpus, vm.memory_mb, vm.guest_os, vm.power_state,
                vm.status, Value(), t, t});
      for (const auto& d : disks) {
        db_.exec("INSERT INTO vm_disks (vm_id, disk_key, unit, label, capacity_bytes, updated_at) "
                 "VALUES (?,?,?,?,?,?)",
                 {vm.vm_id, d.disk_key, d.unit, d.label, d.capacity_bytes, t});
      }
    });
  } catch (const db::ConstraintError&) {
    if (find_vm(vm.vm_id)) throw Conflict(fmt::format("VM {} is already known to the OMA", vm.vm_id));
    throw Conflict(fmt::format("VM {}: two disks share a key or a unit number; each disk needs its own", vm.vm_id));
  }
}

std::optional<VmRecord> Store::find_vm(const std::string& vm_id) {
  auto rows = db_.query(fmt::format("SELECT {} FROM vm_contexts WHERE vm_id = ?", kVmCols), {vm_id});
  if (rows.empty()) return std::nullopt;
  return vm_from(rows[0]);
}

VmRecord Store::get_vm(const std::string& vm_id) {
  auto v = find_vm(vm_id);
  if (!v) throw NotFound(fmt::format("VM {} is not known to the OMA: add it first (POST /api/v1/vms)", vm_id));
  return *v;
}

std::vector<VmRecord> Store::list_vms() {
  std::vector<VmRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM vm_contexts ORDER BY name, vm_id", kVmCols)))
    out.push_back(vm_from(r));
  return out;
}

std::vector<DiskRecord> Store::list_disks(const std::string& vm_id) {
  std::vector<DiskRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM vm_disks WHERE vm_id = ? ORDER BY unit", kDiskCols),
                                 {vm_id}))
    out.push_back(disk_from(r));
  return out;
}

void Store::set_vm_status(const std::string& vm_id, const std::string& status) {
  db_.exec("UPDATE vm_contexts SET status = ?, updated_at = ? WHERE vm_id = ?", {status, now_ms(), vm_id});
}

// --- Volumes -----------------------------------------------------------------------

std::optional<VolumeRecord> Store::find_volume(const std::string& vm_id, const std::string& disk_key) {
  auto rows = db_.query(fmt::format("SELECT {} FROM volumes WHERE vm_id = ? AND disk_key = ?", kVolumeCols),
                        {vm_id, disk_key});
  if (rows.empty()) return std::nullopt;
  return volume_from(rows[0]);
}

void Store::insert_volume(const VolumeRecord& v) {
  try {
    db_.transaction([&] {
      db_.exec(fmt::format("INSERT INTO volumes ({}) VALUES (?,?,?,?,?,?,?,?)", kVolumeCols),
               {v.volume_id, v.vm_id, v.disk_key, v.backend, v.size_bytes, v.device_path, v.status, v.created_at});
      if (db_.exec("UPDATE vm_disks SET volume_id = ?, updated_at = ? WHERE vm_id = ? AND disk_key = ?",
                   {v.volume_id, now_ms(), v.vm_id, v.disk_key}) != 1) {
        throw NotFound(fmt::format("VM {} has no disk {}: cannot attach volume {}", v.vm_id, v.disk_key, v.volume_id));
      }
    });
  } catch (const db::ConstraintError&) {
    throw Conflict(fmt::format("VM {} disk {} already has a volume; a disk never gets a second one", v.vm_id,
                               v.disk_key));
  }
}

std::vector<VolumeRecord> Store::list_volumes() {
  std::vector<VolumeRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM volumes ORDER BY vm_id, disk_key", kVolumeCols)))
    out.push_back(volume_from(r));
  return out;
}

// --- Exports -----------------------------------------------------------------------

std::optional<ExportRecord> Store::find_export(const std::string& name) {
  auto rows = db_.query(fmt::format("SELECT {} FROM nbd_exports WHERE export_name = ?", kExportCols), {name});
  if (rows.empty()) return std::nullopt;
  return export_from(rows[0]);
}

void Store::insert_export(const ExportRecord& e, const std::string& vm_id, int64_t unit,
                          const std::string& disk_key) {
  try {
    db_.transaction([&] {
      db_.exec(fmt::format("INSERT INTO nbd_exports ({}) VALUES (?,?,?,?,?,?,?)", kExportCols),
               {e.export_name, e.volume_id, e.device_path, e.backend, e.size_bytes, e.created_at, opt(e.verified_at)});
      db_.exec("INSERT INTO vm_export_mappings (vm_id, unit, export_name) VALUES (?,?,?)", {vm_id, unit, e.export_name});
      if (db_.exec("UPDATE vm_disks SET export_name = ?, updated_at = ? WHERE vm_id = ? AND disk_key = ?",
                   {e.export_name, now_ms(), vm_id, disk_key}) != 1) {
        throw NotFound(fmt::format("VM {} has no disk {}: cannot map export {}", vm_id, disk_key, e.export_name));
      }
    });
  } catch (const db::ConstraintError&) {
    throw Conflict(fmt::format("export {} (VM {} unit {}, volume {}) collides with an existing export: an export "
                               "serves exactly one volume of one disk",
                               e.export_name, vm_id, unit, e.volume_id));
  }
}

void Store::update_export_device(const std::string& name, const std::string& device_path, int64_t size_bytes) {
  db_.exec("UPDATE nbd_exports SET device_path = ?, size_bytes = ?, verified_at = NULL WHERE export_name = ?",
           {device_path, size_bytes, name});
}

void Store::mark_export_verified(const std::string& name) {
  db_.exec("UPDATE nbd_exports SET verified_at = ? WHERE export_name = ?", {now_ms(), name});
}

std::vector<ExportRecord> Store::list_exports() {
  std::vector<ExportRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM nbd_exports ORDER BY export_name", kExportCols)))
    out.push_back(export_from(r));
  return out;
}

std::optional<std::string> Store::export_for(const std::string& vm_id, int64_t unit) {
  auto rows = db_.query("SELECT export_name FROM vm_export_mappings WHERE vm_id = ? AND unit = ?", {vm_id, unit});
  if (rows.empty()) return std::nullopt;
  return rows[0].str(0);
}

// --- Jobs --------------------------------------------------------------------------

void Store::create_job(const JobRecord& j, const std::vector<JobDiskRecord>& disks) {
  db_.transaction([&] {
    try {
      db_.exec("INSERT INTO active_jobs (vm_id, job_id) VALUES (?, ?)", {j.vm_id, j.job_id});
    } catch (const db::ConstraintError&) {
      auto rows = db_.query("SELECT job_id FROM active_jobs WHERE vm_id = ?", {j.vm_id});
      throw Conflict(fmt::format("VM {} already has an active job {}: wait for it or cancel it first", j.vm_id,
                                 rows.empty() ? "?" : rows[0].str(0)));
    }
    db_.exec(fmt::format("INSERT INTO replication_jobs ({}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", kJobCols),
             {j.job_id, j.vm_id, j.kind, j.status, j.phase, j.bytes_done, j.bytes_total, j.throughput_bps,
              j.eta_seconds, opt(j.error), int64_t{0}, j.created_at, j.created_at, Value()});
    for (const auto& d : disks) {
      db_.exec(fmt::format("INSERT INTO job_disks ({}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", kJobDiskCols),
               {d.job_id, d.disk_key, d.unit, d.export_name, d.status, d.phase, d.bytes_done, d.bytes_total,
                d.throughput_bps, d.eta_seconds, opt(d.change_id_base), opt(d.change_id_new), int64_t{0},
                opt(d.error)});
    }
    db_.exec("UPDATE vm_contexts SET current_job_id = ?, status = ?, updated_at = ? WHERE vm_id = ?",
             {j.job_id, std::string("replicating"), now_ms(), j.vm_id});
  });
}

std::optional<JobRecord> Store::find_job(const std::string& job_id) {
  auto rows = db_.query(fmt::format("SELECT {} FROM replication_jobs WHERE job_id = ?", kJobCols), {job_id});
  if (rows.empty()) return std::nullopt;
  return job_from(rows[0]);
}

JobRecord Store::get_job(const std::string& job_id) {
  auto j = find_job(job_id);
  if (!j) throw NotFound(fmt::format("job {} does not exist (list jobs with GET /api/v1/jobs)", job_id));
  return *j;
}

std::vector<JobRecord> Store::list_jobs(const std::string& vm_id, const std::string& status) {
  std::string sql = fmt::format("SELECT {} FROM replication_jobs WHERE 1 = 1", kJobCols);
  std::vector<Value> params;
  if (!vm_id.empty()) {
    sql += " AND vm_id = ?";
    params.emplace_back(vm_id);
  }
  if (!status.empty()) {
    sql += " AND status = ?";
    params.emplace_back(status);
  }
  sql += " ORDER BY created_at, job_id";
  std::vector<JobRecord> out;
  for (const auto& r : db_.query(sql, params)) out.push_back(job_from(r));
  return out;
}

std::vector<JobRecord> Store::active_jobs() {
  std::vector<JobRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM replication_jobs WHERE job_id IN "
                                             "(SELECT job_id FROM active_jobs) ORDER BY created_at",
                                             kJobCols)))
    out.push_back(job_from(r));
  return out;
}

std::vector<JobDiskRecord> Store::job_disks(const std::string& job_id) {
  std::vector<JobDiskRecord> out;
  for (const auto& r :
       db_.query(fmt::format("SELECT {} FROM job_disks WHERE job_id = ? ORDER BY unit", kJobDiskCols), {job_id}))
    out.push_back(job_disk_from(r));
  return out;
}

void Store::set_job_status(const std::string& job_id, const std::string& status, const std::string& phase) {
  db_.exec("UPDATE replication_jobs SET status = ?, phase = ?, updated_at = ? WHERE job_id = ?",
           {status, phase, now_ms(), job_id});
}

void Store::set_job_disk_export(const std::string& job_id, const std::string& disk_key,
                                const std::string& export_name) {
  db_.exec("UPDATE job_disks SET export_name = ? WHERE job_id = ? AND disk_key = ?", {export_name, job_id, disk_key});
}

void Store::update_disk_progress(const JobDiskRecord& d) {
  db_.exec("UPDATE job_disks SET status = ?, phase = ?, bytes_done = ?, bytes_total = ?, throughput_bps = ?, "
           "eta_seconds = ?, change_id_new = ?, error = ? WHERE job_id = ? AND disk_key = ?",
           {d.status, d.phase, d.bytes_done, d.bytes_total, d.throughput_bps, d.eta_seconds, opt(d.change_id_new),
            opt(d.error), d.job_id, d.disk_key});
}

void Store::roll_up_progress(const std::string& job_id) {
  db_.exec("UPDATE replication_jobs SET "
           "bytes_done = (SELECT COALESCE(SUM(bytes_done), 0) FROM job_disks WHERE job_id = ?), "
           "bytes_total = (SELECT COALESCE(SUM(bytes_total), 0) FROM job_disks WHERE job_id = ?), "
           "throughput_bps = (SELECT COALESCE(SUM(throughput_bps), 0) FROM job_disks WHERE job_id = ?), "
           "eta_seconds = (SELECT COALESCE(MAX(eta_seconds), 0) FROM job_disks WHERE job_id = ?), "
           "updated_at = ? WHERE job_id = ?",
           {job_id, job_id, job_id, job_id, now_ms(), job_id});
}

void Store::request_cancel(const std::string& job_id) {
  db_.exec("UPDATE replication_jobs SET cancel_requested = 1, updated_at = ? WHERE job_id = ?", {now_ms(), job_id});
}

void Store::set_vma_instance(const std::string& job_id, const std::string& instance) {
  db_.exec("UPDATE replication_jobs SET vma_instance = ? WHERE job_id = ?", {instance, job_id});
}

std::optional<std::string> Store::vma_instance(const std::string& job_id) {
  auto rows = db_.query("SELECT vma_instance FROM replication_jobs WHERE job_id = ?", {job_id});
  return rows.empty() ? std::nullopt : rows[0].opt(0);
}

void Store::finish_job(const std::string& job_id, const std::string& status, const std::optional<std::string>& error) {
  db_.transaction([&] {
    JobRecord j = get_job(job_id);
    int64_t t = now_ms();
    db_.exec("UPDATE replication_jobs SET status = ?, phase = ?, error = ?, finished_at = ?, updated_at = ? "
             "WHERE job_id = ?",
             {status, status, opt(error), t, t, job_id});
    db_.exec("DELETE FROM active_jobs WHERE job_id = ?", {job_id});
    db_.exec("UPDATE vm_contexts SET current_job_id = NULL, status = ?, updated_at = ? "
             "WHERE vm_id = ? AND current_job_id = ?",
             {status == "completed" ? std::string("replicated") : std::string("replication_" + status), t, j.vm_id,
              job_id});
  });
}

void Store::commit_change_ids(const std::string& job_id) {
  db_.transaction([&] {
    JobRecord j = get_job(job_id);
    auto disks = job_disks(job_id);
    if (disks.empty()) throw Error(fmt::format("job {} has no disks: nothing to commit", job_id));
    int64_t t = now_ms();
    for (const auto& d : disks) {
      if (d.committed) continue;  // committing twice (recovery) is a no-op
      if (d.status != "completed" || !d.change_id_new || d.change_id_new->empty()) {
        throw Error(fmt::format("job {} VM {} disk {} has not completed with a change ID (status {}): "
                                "no change ID of this job is committed",
                                job_id, j.vm_id, d.disk_key, d.status));
      }
      db_.exec("UPDATE vm_disks SET change_id = ?, updated_at = ? WHERE vm_id = ? AND disk_key = ?",
               {*d.change_id_new, t, j.vm_id, d.disk_key});
      db_.exec("INSERT INTO cbt_history (vm_id, disk_key, job_id, change_id, committed_at) VALUES (?,?,?,?,?)",
               {j.vm_id, d.disk_key, job_id, *d.change_id_new, t});
      db_.exec("UPDATE job_disks SET committed = 1 WHERE job_id = ? AND disk_key = ?", {job_id, d.disk_key});
    }
  });
}

std::vector<std::pair<std::string, std::string>> Store::cbt_history(const std::string& vm_id,
                                                                      const std::string& disk_key) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& r : db_.query("SELECT job_id, change_id FROM cbt_history WHERE vm_id = ? AND disk_key = ? "
                                 "ORDER BY committed_at, job_id",
                                 {vm_id, disk_key}))
    out.emplace_back(r.str(0), r.str(1));
  return out;
}

// --- Steps and events ---------------------------------------------------------------

int64_t Store::begin_step(const std::string& job_id, const std::string& name) {
  int64_t seq = 0;
  db_.transaction([&] {
    seq = db_.query("SELECT COALESCE(MAX(seq), 0) + 1 FROM job_steps WHERE job_id = ?", {job_id})[0].i64(0);
    db_.exec("INSERT INTO job_steps (job_id, seq, name, status, started_at) VALUES (?,?,?,?,?)",
             {job_id, seq, name, std::string("running"), now_ms()});
  });
  return seq;
}

void Store::end_step(const std::string& job_id, int64_t seq, const std::string& status, const std::string& message) {
  db_.exec("UPDATE job_steps SET status = ?, message = ?, finished_at = ? WHERE job_id = ? AND seq = ?",
           {status, message.empty() ? Value() : Value(message), now_ms(), job_id, seq});
}

void Store::add_event(const std::string& job_id, const std::string& level, const std::string& message) {
  db_.transaction([&] {
    int64_t seq = db_.query("SELECT COALESCE(MAX(seq), 0) + 1 FROM job_events WHERE job_id = ?", {job_id})[0].i64(0);
    db_.exec("INSERT INTO job_events (job_id, seq, logged_at, level, message) VALUES (?,?,?,?,?)",
             {job_id, seq, now_ms(), level, message});
  });
}

std::vector<StepRecord> Store::list_steps(const std::string& job_id) {
  std::vector<StepRecord> out;
  for (const auto& r : db_.query("SELECT job_id, seq, name, status, message, started_at, finished_at FROM job_steps "
                                 "WHERE job_id = ? ORDER BY seq",
                                 {job_id})) {
    StepRecord s;
    s.job_id = r.str(0);
    s.seq = r.i64(1);
    s.name = r.str(2);
    s.status = r.str(3);
    s.message = r.opt(4);
    s.started_at = r.i64(5);
    s.finished_at = opt_i64(r, 6);
    out.push_back(std::move(s));
  }
  return out;
}

std::vector<EventRecord> Store::list_events(const std::string& job_id) {
  std::vector<EventRecord> out;
  for (const auto& r :
       db_.query("SELECT job_id, seq, logged_at, level, message FROM job_events WHERE job_id = ? ORDER BY seq", {job_id})) {
    EventRecord e;
    e.job_id = r.str(0);
    e.seq = r.i64(1);
    e.at = r.i64(2);
    e.level = r.str(3);
    e.message = r.str(4);
    out.push_back(std::move(e));
  }
  return out;
}

// --- Tokens and settings ------------------------------------------------------------

void Store::insert_token(const TokenRecord& t, const std::string& token_hash) {
  db_.exec("INSERT INTO api_tokens (token_id, name, token_hash, role, created_at) VALUES (?,?,?,?,?)",
           {t.token_id, t.name, token_hash, t.role, t.created_at});
}

std::optional<TokenRecord> Store::find_live_token(const std::string& token_hash) {
  auto rows = db_.query("SELECT token_id, name, role, created_at FROM api_tokens "
                        "WHERE token_hash = ? AND revoked_at IS NULL",
                        {token_hash});
  if (rows.empty()) return std::nullopt;
  return TokenRecord{rows[0].str(0), rows[0].str(1), rows[0].str(2), rows[0].i64(3), std::nullopt};
}

std::vector<TokenRecord> Store::list_tokens() {
  std::vector<TokenRecord> out;
  for (const auto& r : db_.query("SELECT token_id, name, role, created_at, revoked_at FROM api_tokens "
                                 "ORDER BY created_at, token_id"))
    out.push_back({r.str(0), r.str(1), r.str(2), r.i64(3), opt_i64(r, 4)});
  return out;
}

void Store::revoke_token(const std::string& token_id) {
  if (db_.exec("UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
               {now_ms(), token_id}) != 1) {
    throw NotFound(fmt::format("token {} does not exist or is already revoked", token_id));
  }
}

int64_t Store::count_tokens() { return db_.query("SELECT COUNT(*) FROM api_tokens")[0].i64(0); }

void Store::put_setting(const std::string& name, const std::string& value, bool encrypted) {
  db_.transaction([&] {
    int64_t t = now_ms();
    if (db_.exec("UPDATE settings SET value = ?, encrypted = ?, updated_at = ? WHERE name = ?",
                 {value, int64_t{encrypted}, t, name}) == 0) {
      db_.exec("INSERT INTO settings (name, value, encrypted, updated_at) VALUES (?,?,?,?)",
               {name, value, int64_t{encrypted}, t});
    }
  });
}

std::optional<std::pair<std::string, bool>> Store::get_setting(const std::string& name) {
  auto rows = db_.query("SELECT value, encrypted FROM settings WHERE name = ?", {name});
  if (rows.empty()) return std::nullopt;
  return std::make_pair(rows[0].str(0), rows[0].i64(1) != 0);
}

std::vector<std::pair<std::string, bool>> Store::list_settings() {
  std::vector<std::pair<std::string, bool>> out;
  for (const auto& r : db_.query("SELECT name, encrypted FROM settings ORDER BY name"))
    out.emplace_back(r.str(0), r.i64(1) != 0);
  return out;
}

std::vector<std::pair<std::string, int64_t>> Store::jobs_by_status() {
  std::vector<std::pair<std::string, int64_t>> out;
  for (const auto& r : db_.query("SELECT status, COUNT(*) FROM replication_jobs GROUP BY status ORDER BY status"))
    out.emplace_back(r.str(0), r.i64(1));
  return out;
}

std::pair<int64_t, double> Store::job_totals() {
  auto bytes = db_.query("SELECT COALESCE(SUM(bytes_done), 0) FROM replication_jobs")[0].i64(0);
  auto bps = db_.query("SELECT COALESCE(SUM(throughput_bps), 0) FROM replication_jobs WHERE job_id IN "
                       "(SELECT job_id FROM active_jobs)")[0].dbl(0);
  return {bytes, bps};
}

int64_t Store::count_exports() { return db_.query("SELECT COUNT(*) FROM nbd_exports")[0].i64(0); }

void Store::set_vm_nics(const std::string& vm_id, const std::vector<NicRecord>& nics) {
  get_vm(vm_id);
  try {
    db_.transaction([&] {
      db_.exec("DELETE FROM vm_nics WHERE vm_id = ?", {vm_id});
      for (const auto& n : nics) {
        db_.exec("INSERT INTO vm_nics (vm_id, nic_key, mac, network) VALUES (?,?,?,?)",
                 {vm_id, n.nic_key, n.mac, n.network});
      }
    });
  } catch (const db::ConstraintError&) {
    throw Conflict(fmt::format("VM {}: two NICs share a key; each NIC needs its own", vm_id));
  }
}

std::vector<NicRecord> Store::list_nics(const std::string& vm_id) {
  std::vector<NicRecord> out;
  for (const auto& r : db_.query("SELECT vm_id, nic_key, mac, network FROM vm_nics WHERE vm_id = ? ORDER BY nic_key",
                                 {vm_id}))
    out.push_back({r.str(0), r.str(1), r.str(2), r.str(3)});
  return out;
}

void Store::put_failover(const FailoverRecord& f) {
  db_.transaction([&] {
    db_.exec("DELETE FROM vm_failovers WHERE vm_id = ? AND kind = ?", {f.vm_id, f.kind});
    db_.exec("INSERT INTO vm_failovers (vm_id, kind, job_id, target_vm_id, details, created_at) VALUES (?,?,?,?,?,?)",
             {f.vm_id, f.kind, f.job_id, f.target_vm_id, f.details, f.created_at ? f.created_at : now_ms()});
  });
}

std::optional<FailoverRecord> Store::find_failover(const std::string& vm_id, const std::string& kind) {
  auto rows = db_.query(
      "SELECT vm_id, kind, job_id, target_vm_id, details, created_at FROM vm_failovers WHERE vm_id = ? AND kind = ?",
      {vm_id, kind});
  if (rows.empty()) return std::nullopt;
  const Row& r = rows[0];
  return FailoverRecord{r.str(0), r.str(1), r.str(2), r.str(3), r.str(4), r.i64(5)};
}

void Store::delete_failover(const std::string& vm_id, const std::string& kind) {
  db_.exec("DELETE FROM vm_failovers WHERE vm_id = ? AND kind = ?", {vm_id, kind});
}

// --- VMAs and pairing -----------------------------------------------------------------

namespace {
const char* kVmaCols =
    "vma_id, name, vcenter, ssh_public_key, state, tunnel_port, api_token_sealed, created_at, approved_at, revoked_at, "
    "nbd_psk_sealed";
VmaRecord vma_from(const Row& r) {
  VmaRecord v;
  v.vma_id = r.str(0);
  v.name = r.str(1);
  v.vcenter = r.str(2);
  v.ssh_public_key = r.str(3);
  v.state = r.str(4);
  v.tunnel_port = r.i64(5);
  v.api_token_sealed = r.str(6);
  v.created_at = r.i64(7);
  v.approved_at = opt_i64(r, 8);
  v.revoked_at = opt_i64(r, 9);
  v.nbd_psk_sealed = r.opt(10);
  return v;
}
}  // namespace

void Store::insert_pairing_code(const PairingCodeRecord& c) {
  db_.exec("INSERT INTO vma_pairing_codes (code_hash, api_token_sealed, nbd_psk_sealed, created_at, expires_at) "
           "VALUES (?,?,?,?,?)",
           {c.code_hash, c.api_token_sealed, opt(c.nbd_psk_sealed), c.created_at, c.expires_at});
}

VmaRecord Store::enroll_vma(const std::string& code_hash, int64_t now, VmaRecord vma, int64_t port_base) {
  db_.transaction([&] {
    auto rows = db_.query(
        "SELECT api_token_sealed, expires_at, used_at, nbd_psk_sealed FROM vma_pairing_codes WHERE code_hash = ?",
        {code_hash});
    if (rows.empty()) throw Conflict("unknown pairing code: ask the OMA's operator for a new pairing bundle");
    if (!rows[0].is_null(2))
      throw Conflict("this pairing code was already used (codes are single-use): ask for a new pairing bundle");
    if (rows[0].i64(1) <= now) throw Conflict("this pairing code has expired: ask for a new pairing bundle");
    if (db_.exec("UPDATE vma_pairing_codes SET used_at = ?, vma_id = ? WHERE code_hash = ? AND used_at IS NULL",
                 {now, vma.vma_id, code_hash}) != 1)
      throw Conflict("this pairing code was already used (codes are single-use): ask for a new pairing bundle");
    auto max = db_.query("SELECT MAX(tunnel_port) FROM vmas");
    int64_t top = max.empty() || max[0].is_null(0) ? 0 : max[0].i64(0);
    vma.tunnel_port = std::max(port_base, top + 1);
    vma.api_token_sealed = rows[0].str(0);
    vma.nbd_psk_sealed = rows[0].opt(3);
    vma.state = "pending";
    vma.created_at = now;
    db_.exec(fmt::format("INSERT INTO vmas ({}) VALUES (?,?,?,?,?,?,?,?,?,?,?)", kVmaCols),
             {vma.vma_id, vma.name, vma.vcenter, vma.ssh_public_key, vma.state, vma.tunnel_port,
              vma.api_token_sealed, vma.created_at, Value(), Value(), opt(vma.nbd_psk_sealed)});
  });
  return vma;
}

std::optional<VmaRecord> Store::find_vma(const std::string& vma_id) {
  auto rows = db_.query(fmt::format("SELECT {} FROM vmas WHERE vma_id = ?", kVmaCols), {vma_id});
  if (rows.empty()) return std::nullopt;
  return vma_from(rows[0]);
}

VmaRecord Store::get_vma(const std::string& vma_id) {
  auto v = find_vma(vma_id);
  if (!v) throw NotFound(fmt::format("VMA {} is not paired with this OMA (see GET /api/v1/vmas)", vma_id));
  return *v;
}

std::vector<VmaRecord> Store::list_vmas() {
  std::vector<VmaRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM vmas ORDER BY created_at, vma_id", kVmaCols)))
    out.push_back(vma_from(r));
  return out;
}

void Store::set_vma_state(const std::string& vma_id, const std::string& state) {
  db_.transaction([&] {
    VmaRecord v = get_vma(vma_id);
    bool ok = (state == "approved" && v.state == "pending") || (state == "revoked" && v.state != "revoked");
    if (!ok) throw Conflict(fmt::format("VMA {} ({}) is {}: it cannot become {}", vma_id, v.name, v.state, state));
    const char* column = state == "approved" ? "approved_at" : "revoked_at";
    db_.exec(fmt::format("UPDATE vmas SET state = ?, {} = ? WHERE vma_id = ?", column), {state, now_ms(), vma_id});
  });
}

std::optional<std::string> Store::vm_vma(const std::string& vm_id) {
  auto rows = db_.query("SELECT vma_id FROM vm_contexts WHERE vm_id = ?", {vm_id});
  if (rows.empty()) throw NotFound(fmt::format("VM {} is not known to the OMA", vm_id));
  return rows[0].opt(0);
}

void Store::set_vm_vma(const std::string& vm_id, const std::optional<std::string>& vma_id) {
  if (db_.exec("UPDATE vm_contexts SET vma_id = ? WHERE vm_id = ?", {opt(vma_id), vm_id}) != 1)
    throw NotFound(fmt::format("VM {} is not known to the OMA", vm_id));
}

// --- Schedules and pass history -------------------------------------------------------

namespace {
const char* kScheduleCols =
    "vm_id, interval_minutes, enabled, next_run_at, last_run_at, last_job_id, last_result, updated_at";
ScheduleRecord schedule_from(const Row& r) {
  ScheduleRecord s;
  s.vm_id = r.str(0);
  s.interval_minutes = r.i64(1);
  s.enabled = r.i64(2) != 0;
  s.next_run_at = r.i64(3);
  s.last_run_at = opt_i64(r, 4);
  s.last_job_id = r.opt(5);
  s.last_result = r.opt(6);
  s.updated_at = r.i64(7);
  return s;
}
}  // namespace

void Store::put_schedule(const ScheduleRecord& s) {
  db_.transaction([&] {
    get_vm(s.vm_id);
    int64_t t = now_ms();
    if (db_.exec("UPDATE vm_schedules SET interval_minutes = ?, enabled = ?, next_run_at = ?, updated_at = ? "
                 "WHERE vm_id = ?",
                 {s.interval_minutes, int64_t{s.enabled}, s.next_run_at, t, s.vm_id}) == 0) {
      db_.exec(fmt::format("INSERT INTO vm_schedules ({}) VALUES (?,?,?,?,?,?,?,?)", kScheduleCols),
               {s.vm_id, s.interval_minutes, int64_t{s.enabled}, s.next_run_at, Value(), Value(), Value(), t});
    }
  });
}

std::optional<ScheduleRecord> Store::find_schedule(const std::string& vm_id) {
  auto rows = db_.query(fmt::format("SELECT {} FROM vm_schedules WHERE vm_id = ?", kScheduleCols), {vm_id});
  if (rows.empty()) return std::nullopt;
  return schedule_from(rows[0]);
}

std::vector<ScheduleRecord> Store::list_schedules() {
  std::vector<ScheduleRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM vm_schedules ORDER BY vm_id", kScheduleCols)))
    out.push_back(schedule_from(r));
  return out;
}

void Store::delete_schedule(const std::string& vm_id) {
  if (db_.exec("DELETE FROM vm_schedules WHERE vm_id = ?", {vm_id}) != 1)
    throw NotFound(fmt::format("VM {} has no schedule", vm_id));
}

void Store::record_schedule_run(const std::string& vm_id, int64_t at, int64_t next_run_at,
                                const std::optional<std::string>& job_id, const std::string& result) {
  db_.exec("UPDATE vm_schedules SET last_run_at = ?, next_run_at = ?, last_job_id = COALESCE(?, last_job_id), "
           "last_result = ?, updated_at = ? WHERE vm_id = ?",
           {at, next_run_at, opt(job_id), result, now_ms(), vm_id});
}

std::vector<JobRecord> Store::ended_passes() {
  std::vector<JobRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM replication_jobs WHERE kind IN ('full', 'incremental') "
                                             "AND finished_at IS NOT NULL ORDER BY finished_at, job_id",
                                             kJobCols)))
    out.push_back(job_from(r));
  return out;
}

std::vector<ChangeIdCommit> Store::latest_change_id_commits() {
  std::vector<ChangeIdCommit> out;
  for (const auto& r : db_.query("SELECT vm_id, disk_key, MAX(committed_at) FROM cbt_history "
                                 "GROUP BY vm_id, disk_key ORDER BY vm_id, disk_key"))
    out.push_back({r.str(0), r.str(1), r.i64(2)});
  return out;
}

std::vector<JobRecord> Store::jobs_updated_since(int64_t since_ms) {
  std::vector<JobRecord> out;
  for (const auto& r : db_.query(fmt::format("SELECT {} FROM replication_jobs WHERE updated_at >= ? "
                                             "ORDER BY updated_at, job_id",
                                             kJobCols),
                                 {since_ms}))
    out.push_back(job_from(r));
  return out;
}

}  // namespace mk::oma
