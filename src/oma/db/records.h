// Plain records of the OMA's state, one per table row (see migrations.cpp for the
// schema). Times are milliseconds since the Unix epoch. Values, no behaviour; copy
// freely between threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace mk::oma {

struct VmRecord {
  std::string vm_id;  // VMware instance UUID, lowercase
  std::string name, vcenter, datacenter, guest_os, power_state;
  int64_t cpus = 0, memory_mb = 0;
  std::string status = "discovered";
  std::optional<std::string> current_job_id;
  int64_t created_at = 0, updated_at = 0;
};

struct DiskRecord {
  std::string vm_id, disk_key;  // disk_key: VMware's device key ("2000")
  int64_t unit = 0;             // unit number: the N in the export name's diskN
  std::string label;
  int64_t capacity_bytes = 0;
  std::optional<std::string> volume_id, export_name, change_id;
};

struct VolumeRecord {
  std::string volume_id, vm_id, disk_key, backend, device_path, status;
  int64_t size_bytes = 0, created_at = 0;
};

struct ExportRecord {
  std::string export_name, volume_id, device_path, backend;
  int64_t size_bytes = 0, created_at = 0;
  std::optional<int64_t> verified_at;
};

// Job status: preparing, exporting, copying, committing (active); completed, failed,
// cancelled (terminal).
struct JobRecord {
  std::string job_id, vm_id, kind, status, phase;
  int64_t bytes_done = 0, bytes_total = 0;
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> error;
  bool cancel_requested = false;
  int64_t created_at = 0, updated_at = 0;
  std::optional<int64_t> finished_at;
};

// One disk of one job. status: pending, copying, completed, failed.
struct JobDiskRecord {
  std::string job_id, disk_key, export_name, status = "pending", phase = "pending";
  int64_t unit = 0, bytes_done = 0, bytes_total = 0;
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> change_id_base, change_id_new, error;
  bool committed = false;
};

struct StepRecord {
  std::string job_id, name, status;
  int64_t seq = 0, started_at = 0;
  std::optional<std::string> message;
  std::optional<int64_t> finished_at;
};

struct EventRecord {
  std::string job_id, level, message;
  int64_t seq = 0, at = 0;
};

struct TokenRecord {
  std::string token_id, name, role;  // role: admin or operator
  int64_t created_at = 0;
  std::optional<int64_t> revoked_at;
};

// One NIC of a source VM: the VMware network (port group) name and its MAC.
struct NicRecord {
  std::string vm_id, nic_key, mac, network;
};

// What a cutover ("cutover") or a test failover ("test_failover") built in the target
// for a VM: the target VM's id and, as JSON, what undoing it needs.
struct FailoverRecord {
  std::string vm_id, kind, job_id, target_vm_id, details;
  int64_t created_at = 0;
};

// A VMA paired with this OMA. state: pending (enrolled, waiting for an operator),
// approved (its key may hold the tunnel), revoked. The API token the OMA presents to
// it is kept sealed (SecretBox), never in clear.
struct VmaRecord {
  std::string vma_id, name, vcenter, ssh_public_key, state, api_token_sealed;
  std::optional<std::string> nbd_psk_sealed;  // its NBD PSK line, sealed (none with X.509)
  int64_t tunnel_port = 0, created_at = 0;
  std::optional<int64_t> approved_at, revoked_at;
};

// A one-time pairing code (stored as its SHA-256), the VMA API token and NBD PSK it
// will hand to the VMA that enrols with it.
struct PairingCodeRecord {
  std::string code_hash, api_token_sealed;
  int64_t created_at = 0, expires_at = 0;
  std::optional<int64_t> used_at;
  std::optional<std::string> vma_id, nbd_psk_sealed;
};

// A VM's repeating incremental pass (vm_schedules). Times in ms since the epoch.
struct ScheduleRecord {
  std::string vm_id;
  int64_t interval_minutes = 0;
  bool enabled = false;
  int64_t next_run_at = 0;
  std::optional<int64_t> last_run_at;
  std::optional<std::string> last_job_id, last_result;
  int64_t updated_at = 0;
};

// When each disk's current change ID was committed (cbt_history).
struct ChangeIdCommit {
  std::string vm_id, disk_key;
  int64_t committed_at = 0;
};

inline bool job_is_terminal(const std::string& status) {
  return status == "completed" || status == "failed" || status == "cancelled";
}

}  // namespace mk::oma
