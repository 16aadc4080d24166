// VmRepository: the source VMs the OMA manages, as it knows them: each VM (vm_contexts)
// with its disks (vm_disks), its NICs (vm_nics), the VMA that serves it (vm_contexts.
// vma_id) and what a cutover or a test failover built for it in the target
// (vm_failovers).
//
// Failovers live here, not with the jobs, because they are the VM's state in the
// target, keyed by (VM, kind): a VM in test failover is one that has a "test_failover"
// record; the cleanup job deletes the record another job wrote; the VM view shows it.
//
// Other repositories write a few columns of these tables inside their own transactions
// (see their headers): JobRepository vm_contexts.current_job_id/status (claiming and
// releasing the VM) and vm_disks.change_id (committing); StorageRepository
// vm_disks.volume_id and vm_disks.export_name (linking a disk to its volume and export).
//
// Invariants: a VM's disks have distinct keys and distinct unit numbers (add_vm throws
// Conflict, nothing stored); its NICs distinct keys (set_vm_nics, replaced whole or
// not at all). Unknown VMs throw NotFound.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"
#include "protocol/enums.h"

namespace mk::oma {

// Where a VM is in its migration. Stored in vm_contexts.status.
enum class VmStatus {
  Discovered,               // added; never replicated
  Replicating,              // a job holds the VM (any kind, until its body says more)
  Replicated,               // the last job completed
  ReplicationFailed,        // the last job failed
  ReplicationCancelled,     // the last job was cancelled
  CuttingOver,              // a cutover runs
  CutOver,                  // runs in CloudStack; no more replication
  CutoverFailed,            // a cutover failed and its rollback did not finish
  CutoverInterrupted,       // the OMA restarted during a cutover
  TestFailoverStarting,     // a test failover runs
  TestFailover,             // a test copy runs on the test network
  TestFailoverInterrupted,  // the OMA restarted during a test failover
  TestFailoverCleanupInterrupted,
  BootChecking,             // a boot check runs on overlays of its volumes (replicated before and after)
  Inspecting,               // virt-inspector reads its volumes (replicated before and after)
};
const EnumTable<VmStatus>& enum_table(VmStatus);

// What a failover record describes. Stored in vm_failovers.kind.
enum class FailoverKind { Cutover, TestFailover };
const EnumTable<FailoverKind>& enum_table(FailoverKind);

struct VmRecord {
  std::string vm_id;  // VMware instance UUID, lowercase
  std::string name, vcenter, datacenter, guest_os;
  protocol::PowerState power_state = protocol::PowerState::PoweredOn;  // vm_contexts.power_state
  int64_t cpus = 0, memory_mb = 0;
  VmStatus status = VmStatus::Discovered;
  std::optional<std::string> current_job_id;
  int64_t created_at = 0, updated_at = 0;  // ms since the Unix epoch
  std::optional<std::string> vma_id;  // the VMA that discovered it; nullopt: the default VMA
};

struct DiskRecord {
  std::string vm_id, disk_key;  // disk_key: VMware's device key ("2000")
  int64_t unit = 0;             // unit number: the N in the export name's diskN
  std::string label;
  int64_t capacity_bytes = 0;
  std::optional<std::string> volume_id, export_name, change_id;
};

// One NIC of a source VM: the VMware network (port group) name and its MAC.
struct NicRecord {
  std::string vm_id, nic_key, mac, network;
};

// What a cutover or a test failover built in the target for a VM: the target VM's id
// and, as JSON, what undoing it needs.
struct FailoverRecord {
  std::string vm_id;
  FailoverKind kind = FailoverKind::Cutover;
  std::string job_id, target_vm_id, details;
  int64_t created_at = 0;
};

class VmRepository {
 public:
  explicit VmRepository(db::Database& db) : db_(db) {}

  // Throws Conflict if the VM exists or two disks share a key or a unit.
  void add_vm(const VmRecord& vm, const std::vector<DiskRecord>& disks);
  std::optional<VmRecord> find_vm(const std::string& vm_id);
  VmRecord get_vm(const std::string& vm_id);
  std::vector<VmRecord> list_vms();                                   // by name
  std::vector<DiskRecord> list_disks(const std::string& vm_id);       // by unit
  // Every VM's disks, by VM id, each VM's by unit: one query for a whole list (a query
  // per VM made GET /api/v1/vms with 1,000 VMs a thousand round trips to the database).
  std::map<std::string, std::vector<DiskRecord>> disks_by_vm();
  // A disk grown in vCenter: its new capacity, and its change ID forgotten (its next pass
  // is a full one: changed areas past the old end cannot be trusted).
  void set_disk_grown(const std::string& vm_id, const std::string& disk_key, int64_t capacity_bytes);
  // Every disk's change ID forgotten: the VM's volumes may hold writes the source never
  // made (a cutover rolled back after its guest conversion), so its next pass is full.
  void forget_change_ids(const std::string& vm_id);
  void set_vm_status(const std::string& vm_id, VmStatus status);

  // A VM's NICs (replaced as a whole), in key order.
  void set_vm_nics(const std::string& vm_id, const std::vector<NicRecord>& nics);
  std::vector<NicRecord> list_nics(const std::string& vm_id);

  // The VMA a VM belongs to (the one that discovered it); nullopt: the default VMA.
  std::optional<std::string> vm_vma(const std::string& vm_id);
  void set_vm_vma(const std::string& vm_id, const std::optional<std::string>& vma_id);

  // What a cutover or test failover built (one per VM and kind; put replaces).
  void put_failover(const FailoverRecord& f);
  std::optional<FailoverRecord> find_failover(const std::string& vm_id, FailoverKind kind);
  void delete_failover(const std::string& vm_id, FailoverKind kind);

 private:
  db::Database& db_;
};

}  // namespace mk::oma
