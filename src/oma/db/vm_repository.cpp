#include "oma/db/vm_repository.h"

#include <fmt/format.h>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;
using db::Value;

const EnumTable<VmStatus>& enum_table(VmStatus) {
  static const EnumTable<VmStatus> t{"VM status", {{VmStatus::Discovered, "discovered"},
    {VmStatus::Replicating, "replicating"}, {VmStatus::Replicated, "replicated"},
    {VmStatus::ReplicationFailed, "replication_failed"}, {VmStatus::ReplicationCancelled, "replication_cancelled"},
    {VmStatus::CuttingOver, "cutting_over"}, {VmStatus::CutOver, "cut_over"},
    {VmStatus::CutoverFailed, "cutover_failed"}, {VmStatus::CutoverInterrupted, "cutover_interrupted"},
    {VmStatus::TestFailoverStarting, "test_failover_starting"}, {VmStatus::TestFailover, "test_failover"},
    {VmStatus::TestFailoverInterrupted, "test_failover_interrupted"},
    {VmStatus::TestFailoverCleanupInterrupted, "test_failover_cleanup_interrupted"},
    {VmStatus::BootChecking, "boot_checking"},
    {VmStatus::Inspecting, "inspecting"}}};
  return t;
}

const EnumTable<FailoverKind>& enum_table(FailoverKind) {
  static const EnumTable<FailoverKind> t{"failover kind", {{FailoverKind::Cutover, "cutover"},
    {FailoverKind::TestFailover, "test_failover"}}};
  return t;
}

namespace {

const Table<VmRecord> kVms{"vm_contexts", {column("vm_id", &VmRecord::vm_id), column("name", &VmRecord::name),
    column("vcenter", &VmRecord::vcenter), column("datacenter", &VmRecord::datacenter), column("cpus", &VmRecord::cpus),
    column("memory_mb", &VmRecord::memory_mb), column("guest_os", &VmRecord::guest_os),
    column("power_state", &VmRecord::power_state), column("status", &VmRecord::status),
    column("current_job_id", &VmRecord::current_job_id), column("created_at", &VmRecord::created_at),
    column("updated_at", &VmRecord::updated_at), column("vma_id", &VmRecord::vma_id)}, 1};

const Table<DiskRecord> kDisks{"vm_disks", {column("vm_id", &DiskRecord::vm_id),
    column("disk_key", &DiskRecord::disk_key), column("unit", &DiskRecord::unit), column("label", &DiskRecord::label),
    column("capacity_bytes", &DiskRecord::capacity_bytes), column("volume_id", &DiskRecord::volume_id),
    column("export_name", &DiskRecord::export_name), column("change_id", &DiskRecord::change_id)}, 2};

const Table<NicRecord> kNics{"vm_nics", {column("vm_id", &NicRecord::vm_id), column("nic_key", &NicRecord::nic_key),
    column("mac", &NicRecord::mac), column("network", &NicRecord::network)}, 2};

const Table<FailoverRecord> kFailovers{"vm_failovers", {column("vm_id", &FailoverRecord::vm_id),
    column("kind", &FailoverRecord::kind), column("job_id", &FailoverRecord::job_id),
    column("target_vm_id", &FailoverRecord::target_vm_id), column("details", &FailoverRecord::details),
    column("created_at", &FailoverRecord::created_at)}, 2};

}  // namespace

void VmRepository::add_vm(const VmRecord& vm, const std::vector<DiskRecord>& disk_list) {
  VmRecord row = vm;
  row.created_at = row.updated_at = now_ms();
  row.current_job_id.reset();
  try {
    db_.transaction([&] {
      kVms.insert(db_, row);
      for (DiskRecord d : disk_list) {
        d.vm_id = vm.vm_id;
        // Linked later, by their owners. (Three resets: GCC 12 warns of a string "maybe
        // used uninitialized" in the chained nullopt assignment.)
        d.volume_id.reset();
        d.export_name.reset();
        d.change_id.reset();
        kDisks.insert(db_, d, {{"updated_at", row.updated_at}});
      }
    });
  } catch (const db::ConstraintError&) {
    if (find_vm(vm.vm_id)) throw Conflict(fmt::format("VM {} is already known to the OMA", vm.vm_id));
    throw Conflict(fmt::format("VM {}: two disks share a key or a unit number; each disk needs its own", vm.vm_id));
  }
}

std::optional<VmRecord> VmRepository::find_vm(const std::string& vm_id) {
  return kVms.query_one(db_, "WHERE vm_id = ?", {vm_id});
}

VmRecord VmRepository::get_vm(const std::string& vm_id) {
  return found(find_vm(vm_id), fmt::format("VM {} is not known to the OMA: add it first (POST /api/v1/vms)", vm_id));
}

std::vector<VmRecord> VmRepository::list_vms() { return kVms.query(db_, "ORDER BY name, vm_id"); }

std::vector<DiskRecord> VmRepository::list_disks(const std::string& vm_id) {
  return kDisks.query(db_, "WHERE vm_id = ? ORDER BY unit", {vm_id});
}

std::map<std::string, std::vector<DiskRecord>> VmRepository::disks_by_vm() {
  std::map<std::string, std::vector<DiskRecord>> out;
  for (auto& d : kDisks.query(db_, "ORDER BY vm_id, unit")) out[d.vm_id].push_back(std::move(d));
  return out;
}

void VmRepository::set_disk_grown(const std::string& vm_id, const std::string& disk_key, int64_t capacity_bytes) {
  db_.exec("UPDATE vm_disks SET capacity_bytes = ?, change_id = NULL, updated_at = ? WHERE vm_id = ? AND disk_key = ?",
           {capacity_bytes, now_ms(), vm_id, disk_key});
}

void VmRepository::forget_change_ids(const std::string& vm_id) {
  db_.exec("UPDATE vm_disks SET change_id = NULL, updated_at = ? WHERE vm_id = ?", {now_ms(), vm_id});
}

void VmRepository::set_vm_status(const std::string& vm_id, VmStatus status) {
  db_.exec("UPDATE vm_contexts SET status = ?, updated_at = ? WHERE vm_id = ?", {enum_name(status), now_ms(), vm_id});
}

void VmRepository::set_vm_nics(const std::string& vm_id, const std::vector<NicRecord>& nic_list) {
  get_vm(vm_id);
  try {
    db_.transaction([&] {
      db_.exec("DELETE FROM vm_nics WHERE vm_id = ?", {vm_id});
      for (NicRecord n : nic_list) {
        n.vm_id = vm_id;
        kNics.insert(db_, n);
      }
    });
  } catch (const db::ConstraintError&) {
    throw Conflict(fmt::format("VM {}: two NICs share a key; each NIC needs its own", vm_id));
  }
}

std::vector<NicRecord> VmRepository::list_nics(const std::string& vm_id) {
  return kNics.query(db_, "WHERE vm_id = ? ORDER BY nic_key", {vm_id});
}

std::optional<std::string> VmRepository::vm_vma(const std::string& vm_id) { return get_vm(vm_id).vma_id; }

void VmRepository::set_vm_vma(const std::string& vm_id, const std::optional<std::string>& vma_id) {
  if (db_.exec("UPDATE vm_contexts SET vma_id = ? WHERE vm_id = ?", {vma_id ? Value(*vma_id) : Value(), vm_id}) != 1)
    throw NotFound(fmt::format("VM {} is not known to the OMA", vm_id));
}

void VmRepository::put_failover(const FailoverRecord& f) {
  FailoverRecord row = f;
  if (!row.created_at) row.created_at = now_ms();
  db_.transaction([&] { kFailovers.upsert(db_, row); });
}

std::optional<FailoverRecord> VmRepository::find_failover(const std::string& vm_id, FailoverKind kind) {
  return kFailovers.query_one(db_, "WHERE vm_id = ? AND kind = ?", {vm_id, enum_name(kind)});
}

void VmRepository::delete_failover(const std::string& vm_id, FailoverKind kind) {
  db_.exec("DELETE FROM vm_failovers WHERE vm_id = ? AND kind = ?", {vm_id, enum_name(kind)});
}

}  // namespace mk::oma
