#include "oma/db/migrations.h"

#include <fmt/format.h>

#include "common/log.h"
#include "oma/db/sealed_values.h"

namespace mk::oma::db {
namespace {

// Version 1: the whole model. Identities are text (UUIDs, names) chosen by the OMA, so
// no engine-specific auto-increment is needed. Uniqueness that protects data is in the
// schema itself: one volume per (VM, disk key), one export per volume and per (VM,
// unit), at most one active job per VM (active_jobs' primary key).
const std::vector<std::string> kV1 = {
    R"(CREATE TABLE vm_contexts (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      name VARCHAR(255) NOT NULL,
      vcenter VARCHAR(255) NOT NULL,
      datacenter VARCHAR(255) NOT NULL,
      cpus BIGINT NOT NULL,
      memory_mb BIGINT NOT NULL,
      guest_os VARCHAR(255) NOT NULL,
      power_state VARCHAR(32) NOT NULL,
      status VARCHAR(32) NOT NULL,
      current_job_id VARCHAR(36) NULL,
      created_at BIGINT NOT NULL,
      updated_at BIGINT NOT NULL))",
    R"(CREATE TABLE volumes (
      volume_id VARCHAR(36) NOT NULL PRIMARY KEY,
      vm_id VARCHAR(36) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      backend VARCHAR(32) NOT NULL,
      size_bytes BIGINT NOT NULL,
      device_path VARCHAR(1024) NOT NULL,
      status VARCHAR(32) NOT NULL,
      created_at BIGINT NOT NULL,
      CONSTRAINT volumes_identity UNIQUE (vm_id, disk_key)))",
    R"(CREATE TABLE vm_disks (
      vm_id VARCHAR(36) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      unit BIGINT NOT NULL,
      label VARCHAR(255) NOT NULL,
      capacity_bytes BIGINT NOT NULL,
      volume_id VARCHAR(36) NULL,
      export_name VARCHAR(128) NULL,
      change_id TEXT NULL,
      updated_at BIGINT NOT NULL,
      PRIMARY KEY (vm_id, disk_key),
      CONSTRAINT vm_disks_unit UNIQUE (vm_id, unit),
      CONSTRAINT vm_disks_volume UNIQUE (volume_id),
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
    R"(CREATE TABLE nbd_exports (
      export_name VARCHAR(128) NOT NULL PRIMARY KEY,
      volume_id VARCHAR(36) NOT NULL,
      device_path VARCHAR(1024) NOT NULL,
      size_bytes BIGINT NOT NULL,
      backend VARCHAR(32) NOT NULL,
      created_at BIGINT NOT NULL,
      verified_at BIGINT NULL,
      CONSTRAINT nbd_exports_volume UNIQUE (volume_id)))",
    R"(CREATE TABLE vm_export_mappings (
      vm_id VARCHAR(36) NOT NULL,
      unit BIGINT NOT NULL,
      export_name VARCHAR(128) NOT NULL,
      PRIMARY KEY (vm_id, unit),
      CONSTRAINT vm_export_mappings_export UNIQUE (export_name)))",
    R"(CREATE TABLE replication_jobs (
      job_id VARCHAR(36) NOT NULL PRIMARY KEY,
      vm_id VARCHAR(36) NOT NULL,
      kind VARCHAR(16) NOT NULL,
      status VARCHAR(32) NOT NULL,
      phase VARCHAR(64) NOT NULL,
      bytes_done BIGINT NOT NULL,
      bytes_total BIGINT NOT NULL,
      throughput_bps DOUBLE NOT NULL,
      eta_seconds DOUBLE NOT NULL,
      error TEXT NULL,
      cancel_requested BIGINT NOT NULL,
      vma_instance VARCHAR(64) NULL,
      created_at BIGINT NOT NULL,
      updated_at BIGINT NOT NULL,
      finished_at BIGINT NULL))",
    "CREATE INDEX replication_jobs_vm ON replication_jobs (vm_id)",
    R"(CREATE TABLE active_jobs (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      job_id VARCHAR(36) NOT NULL,
      CONSTRAINT active_jobs_job UNIQUE (job_id)))",
    R"(CREATE TABLE job_disks (
      job_id VARCHAR(36) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      unit BIGINT NOT NULL,
      export_name VARCHAR(128) NOT NULL,
      status VARCHAR(32) NOT NULL,
      phase VARCHAR(64) NOT NULL,
      bytes_done BIGINT NOT NULL,
      bytes_total BIGINT NOT NULL,
      throughput_bps DOUBLE NOT NULL,
      eta_seconds DOUBLE NOT NULL,
      change_id_base TEXT NULL,
      change_id_new TEXT NULL,
      committed BIGINT NOT NULL,
      error TEXT NULL,
      PRIMARY KEY (job_id, disk_key)))",
    R"(CREATE TABLE cbt_history (
      vm_id VARCHAR(36) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      job_id VARCHAR(36) NOT NULL,
      change_id TEXT NOT NULL,
      committed_at BIGINT NOT NULL,
      PRIMARY KEY (vm_id, disk_key, job_id)))",
    R"(CREATE TABLE job_steps (
      job_id VARCHAR(36) NOT NULL,
      seq BIGINT NOT NULL,
      name VARCHAR(64) NOT NULL,
      status VARCHAR(32) NOT NULL,
      message TEXT NULL,
      started_at BIGINT NOT NULL,
      finished_at BIGINT NULL,
      PRIMARY KEY (job_id, seq)))",
    R"(CREATE TABLE job_events (
      job_id VARCHAR(36) NOT NULL,
      seq BIGINT NOT NULL,
      logged_at BIGINT NOT NULL,
      level VARCHAR(16) NOT NULL,
      message TEXT NOT NULL,
      PRIMARY KEY (job_id, seq)))",
    R"(CREATE TABLE api_tokens (
      token_id VARCHAR(36) NOT NULL PRIMARY KEY,
      name VARCHAR(64) NOT NULL,
      token_hash VARCHAR(64) NOT NULL,
      role VARCHAR(16) NOT NULL,
      created_at BIGINT NOT NULL,
      revoked_at BIGINT NULL,
      CONSTRAINT api_tokens_hash UNIQUE (token_hash)))",
    R"(CREATE TABLE settings (
      name VARCHAR(64) NOT NULL PRIMARY KEY,
      value TEXT NOT NULL,
      encrypted BIGINT NOT NULL,
      updated_at BIGINT NOT NULL))",
};

// Version 2: what a cutover needs. The source VM's NICs (one CloudStack NIC each,
// through the network mapping), and what a cutover or a test failover built in the
// target (the CloudStack VM, and for a test failover the snapshots its cleanup reverts).
// Job kinds grow longer than 16 characters ("test_failover_cleanup").
const std::vector<std::string> kV2 = {
    R"(CREATE TABLE vm_nics (
      vm_id VARCHAR(36) NOT NULL,
      nic_key VARCHAR(64) NOT NULL,
      mac VARCHAR(32) NOT NULL,
      network VARCHAR(255) NOT NULL,
      PRIMARY KEY (vm_id, nic_key),
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
    R"(CREATE TABLE vm_failovers (
      vm_id VARCHAR(36) NOT NULL,
      kind VARCHAR(32) NOT NULL,
      job_id VARCHAR(36) NOT NULL,
      target_vm_id VARCHAR(64) NOT NULL,
      details TEXT NOT NULL,
      created_at BIGINT NOT NULL,
      PRIMARY KEY (vm_id, kind)))",
};

// Version 3: VMAs paired with this OMA (one per vCenter or site) and the one-time codes
// that enrol them. A VMA's tunnel port stays reserved after revocation, so a new VMA
// never gets a port an old session might still hold. Each VM belongs to the VMA that
// discovered it (vm_contexts.vma_id; NULL: the default VMA of --vma-url). Each VMA has
// its own NBD TLS PSK identity ("identity:hexkey", sealed; NULL with X.509).
const std::vector<std::string> kVmaPairing = {
    R"(CREATE TABLE vmas (
      vma_id VARCHAR(36) NOT NULL PRIMARY KEY,
      name VARCHAR(255) NOT NULL,
      vcenter VARCHAR(255) NOT NULL,
      ssh_public_key TEXT NOT NULL,
      state VARCHAR(16) NOT NULL,
      tunnel_port BIGINT NOT NULL,
      api_token_sealed TEXT NOT NULL,
      nbd_psk_sealed TEXT NULL,
      created_at BIGINT NOT NULL,
      approved_at BIGINT NULL,
      revoked_at BIGINT NULL,
      CONSTRAINT vmas_tunnel_port UNIQUE (tunnel_port)))",
    R"(CREATE TABLE vma_pairing_codes (
      code_hash VARCHAR(64) NOT NULL PRIMARY KEY,
      api_token_sealed TEXT NOT NULL,
      nbd_psk_sealed TEXT NULL,
      created_at BIGINT NOT NULL,
      expires_at BIGINT NOT NULL,
      used_at BIGINT NULL,
      vma_id VARCHAR(36) NULL))",
    "ALTER TABLE vm_contexts ADD COLUMN vma_id VARCHAR(36) NULL",
};

// Version 4, schedules: repeat a VM's incremental pass every interval_minutes (run by the OMA's
// Scheduler; kept here so a schedule survives restarts).
const std::vector<std::string> kSchedules = {
    R"(CREATE TABLE vm_schedules (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      interval_minutes BIGINT NOT NULL,
      enabled BIGINT NOT NULL,
      next_run_at BIGINT NOT NULL,
      last_run_at BIGINT NULL,
      last_job_id VARCHAR(36) NULL,
      last_result TEXT NULL,
      updated_at BIGINT NOT NULL,
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
};

// Version 7, pass phases: the time each disk of a pass spent in each part of it
// (protocol PassPhase), as the VMA measured it, plus the OMA's own "reporting". seq is
// the phase's position in a pass, so rows read back in order.
const std::vector<std::string> kPassPhases = {
    R"(CREATE TABLE IF NOT EXISTS job_disk_phases (
      job_id VARCHAR(36) NOT NULL,
      disk_key VARCHAR(64) NOT NULL,
      phase VARCHAR(32) NOT NULL,
      seq BIGINT NOT NULL,
      seconds DOUBLE NOT NULL,
      PRIMARY KEY (job_id, disk_key, phase)))",
};

// Version 8, OMA nodes (issue 18): several OMA processes over one database. Each node
// registers itself and holds a lease whose times are the database's own clock
// (Database::now_ms_sql), so that nodes judge expiry alike whatever their clocks say.
// incarnation grows at every registration: it is the lease holder's fencing token (a
// renewal or release names it, so a process that lost its lease cannot renew another's).
// A VM's volumes live on one node: vm_placements holds at most one row per VM (its
// primary key), either placed (node_id) or waiting in the queue (node_id NULL, with the
// limit that keeps it waiting); requested_node_id is an operator's move, applied at the
// VM's next pass (its slots are reserved on that node meanwhile). placement_lock has one row, updated first by every placement
// transaction so that two placements never count the same free slot. Written to run
// again over itself (IF NOT EXISTS), as a re-run of the migrations after 5 does.
const std::vector<std::string> kNodes = {
    R"(CREATE TABLE IF NOT EXISTS oma_nodes (
      node_id VARCHAR(64) NOT NULL PRIMARY KEY,
      cloudstack_vm_id VARCHAR(64) NOT NULL,
      nbd_host VARCHAR(255) NOT NULL,
      nbd_port BIGINT NOT NULL,
      ssh_host VARCHAR(255) NOT NULL,
      ssh_port BIGINT NOT NULL,
      api_url VARCHAR(1024) NOT NULL,
      volume_slots BIGINT NOT NULL,
      disk_bytes BIGINT NOT NULL,
      state VARCHAR(16) NOT NULL,
      incarnation BIGINT NOT NULL,
      lease_expires_at BIGINT NOT NULL,
      registered_at BIGINT NOT NULL,
      renewed_at BIGINT NOT NULL,
      released_at BIGINT NULL))",
    R"(CREATE TABLE IF NOT EXISTS vm_placements (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      node_id VARCHAR(64) NULL,
      slots BIGINT NOT NULL,
      disk_bytes BIGINT NOT NULL,
      waiting_limit VARCHAR(32) NOT NULL,
      waiting_reason TEXT NULL,
      requested_node_id VARCHAR(64) NULL,
      queued_at BIGINT NOT NULL,
      placed_at BIGINT NULL,
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
    "CREATE INDEX IF NOT EXISTS vm_placements_node ON vm_placements (node_id)",
    R"(CREATE TABLE IF NOT EXISTS placement_lock (
      name VARCHAR(16) NOT NULL PRIMARY KEY,
      version BIGINT NOT NULL))",
};

// Version 10, failover (issue 18 item 3): a node that takes over a dead node's VM
// records each step of the takeover here (one row per VM, replaced by its next
// takeover), so that a takeover interrupted by another crash is finished by the node
// that claimed it. from_* are the dead node as the claim found it (its incarnation and
// its CloudStack VM, from which the volumes are detached). step: claimed, detached,
// attached, exported (done).
const std::vector<std::string> kTakeovers = {
    R"(CREATE TABLE IF NOT EXISTS vm_takeovers (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      from_node VARCHAR(64) NOT NULL,
      from_incarnation BIGINT NOT NULL,
      from_cloudstack_vm_id VARCHAR(64) NOT NULL,
      to_node VARCHAR(64) NOT NULL,
      step VARCHAR(16) NOT NULL,
      reason TEXT NOT NULL,
      failed_job_id VARCHAR(36) NULL,
      error TEXT NULL,
      claimed_at BIGINT NOT NULL,
      updated_at BIGINT NOT NULL,
      finished_at BIGINT NULL,
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
};

// Version 13, the boot proof before cutover (issue 12, item 5): each VM's last boot
// check. The screenshot is a PNG in base64 (a VGA text screen is a few KiB; a graphical
// one can be hundreds: MEDIUMTEXT, which SQLite reads as TEXT). Booleans are 0/1.
const std::vector<std::string> kBootChecks = {
    R"(CREATE TABLE IF NOT EXISTS vm_boot_checks (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      job_id VARCHAR(36) NOT NULL,
      started_by VARCHAR(32) NOT NULL,
      booted BIGINT NOT NULL,
      reason TEXT NOT NULL,
      inspection_seconds DOUBLE NOT NULL,
      conversion_seconds DOUBLE NOT NULL,
      boot_seconds DOUBLE NOT NULL,
      console_tail TEXT NOT NULL,
      details TEXT NOT NULL,
      screenshot_format VARCHAR(8) NOT NULL,
      screenshot MEDIUMTEXT NULL,
      started_at BIGINT NOT NULL,
      finished_at BIGINT NOT NULL,
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
};

// Version 14, guest inspection shown per VM (issue 12, item 2): each VM's last
// inspection of its replicas, whoever ran it (an operator, the OMA after a pass, a boot
// check, a cutover or test failover). What the guest names (distro, product, root
// device) is TEXT: a guest may say anything. Booleans are 0/1; boot_disk -1 means none.
const std::vector<std::string> kInspections = {
    R"(CREATE TABLE IF NOT EXISTS vm_inspections (
      vm_id VARCHAR(36) NOT NULL PRIMARY KEY,
      job_id VARCHAR(36) NOT NULL,
      started_by VARCHAR(32) NOT NULL,
      os_found BIGINT NOT NULL,
      os_family TEXT NOT NULL,
      distro TEXT NOT NULL,
      version TEXT NOT NULL,
      product_name TEXT NOT NULL,
      osinfo TEXT NOT NULL,
      root_device TEXT NOT NULL,
      boot_disk BIGINT NOT NULL,
      boot_disk_key VARCHAR(64) NOT NULL,
      firmware VARCHAR(16) NOT NULL,
      vsphere_firmware VARCHAR(32) NOT NULL,
      vsphere_secure_boot BIGINT NOT NULL,
      convertible BIGINT NOT NULL,
      reason TEXT NOT NULL,
      seconds DOUBLE NOT NULL,
      inspected_at BIGINT NOT NULL,
      FOREIGN KEY (vm_id) REFERENCES vm_contexts (vm_id) ON DELETE CASCADE))",
};

// Version 15, one NBD client CA for the whole service (issue 18, item 4): the CA every
// node signs VMAs' client certificates with and its routers trust (its key sealed, see
// sealed_values.h), and the certificates it issued, so that every node lists a revoked
// VMA's certificate on its revocation list (pairing/nbd_client_ca.h).
const std::vector<std::string> kNbdClientCa = {
    R"(CREATE TABLE IF NOT EXISTS nbd_client_ca (
      name VARCHAR(32) NOT NULL PRIMARY KEY,
      cert_pem TEXT NOT NULL,
      key_sealed TEXT NOT NULL,
      created_by VARCHAR(64) NOT NULL,
      created_at BIGINT NOT NULL))",
    R"(CREATE TABLE IF NOT EXISTS nbd_client_certs (
      vma_id VARCHAR(36) NOT NULL PRIMARY KEY,
      cert_pem TEXT NOT NULL,
      issued_at BIGINT NOT NULL))",
};

// Version 9, checked VMA reports (issue 13, finding 3): each disk export's count of
// durable written bytes (ExportBackend::written_bytes) when the pass started. NULL: not
// recorded (a backend that cannot count, or a pass started by an older OMA). Runs again
// over itself like 8 (SQLite has no ADD COLUMN IF NOT EXISTS): added only when missing.
void add_written_baseline(Database& db) {
  try {
    db.query("SELECT written_baseline FROM job_disks WHERE 1 = 0");
    return;  // there already
  } catch (const std::exception&) {
  }
  db.exec("ALTER TABLE job_disks ADD COLUMN written_baseline BIGINT NULL");
}

// Version 11, moves of a VM between live nodes (issue 18, item 2): a drained node's VM,
// or one an operator moves, is moved at its next pass by the steps of a takeover
// (nodes/node_failover.h), recorded in vm_takeovers with kind 'move'. Runs again over
// itself like 9: added only when missing.
void add_takeover_kind(Database& db) {
  try {
    db.query("SELECT kind FROM vm_takeovers WHERE 1 = 0");
    return;  // there already
  } catch (const std::exception&) {
  }
  db.exec("ALTER TABLE vm_takeovers ADD COLUMN kind VARCHAR(16) NOT NULL DEFAULT 'failover'");
}

// Version 12, what a VMA needs to hold a tunnel to each node (issue 18, item 4): the node's SSH
// host key to pin and the loopback address its sshd takes the VMA's reverse forward on.
// Nodes registered before know neither until they register again (at their start).
void add_node_tunnel_columns(Database& db) {
  try {
    db.query("SELECT ssh_host_key, tunnel_address FROM oma_nodes WHERE 1 = 0");
    return;  // there already
  } catch (const std::exception&) {
  }
  db.exec("ALTER TABLE oma_nodes ADD COLUMN ssh_host_key VARCHAR(8192) NOT NULL DEFAULT ''");
  db.exec("ALTER TABLE oma_nodes ADD COLUMN tunnel_address VARCHAR(15) NOT NULL DEFAULT '127.0.0.1'");
}

void add_placement_lock(Database& db) {
  if (db.query("SELECT 1 FROM placement_lock WHERE name = 'placement'").empty())
    db.exec("INSERT INTO placement_lock (name, version) VALUES ('placement', 0)");
}

void ensure_table(Database& db) {
  db.exec(R"(CREATE TABLE IF NOT EXISTS schema_migrations (
      version BIGINT NOT NULL PRIMARY KEY,
      name VARCHAR(128) NOT NULL,
      applied_at BIGINT NOT NULL))");
}

}  // namespace

const std::vector<Migration>& migrations() {
  static const std::vector<Migration> all = {
      {1, "initial schema", kV1},
      {2, "cutover: NICs and failover records", kV2,
       {{"mariadb", "ALTER TABLE replication_jobs MODIFY kind VARCHAR(32) NOT NULL"}}},
      {3, "VMAs and pairing", kVmaPairing},
      {4, "incremental pass schedules", kSchedules},
      // "test_failover_cleanup_interrupted" has 33 characters: MariaDB refused it.
      {5, "VM statuses up to 64 characters", {},
       {{"mariadb", "ALTER TABLE vm_contexts MODIFY status VARCHAR(64) NOT NULL"}}},
      // Sealed values bound to their row and purpose (AES-GCM associated data): the
      // values of older OMAs are re-sealed, and the key's id is recorded (sealed_values.h).
      {6, "sealed values bound to their rows", {}, {},
       [](Database& db, const std::function<const SecretBox&()>& secrets) { reseal_unbound_values(db, secrets); }},
      {7, "pass phases per disk", kPassPhases},
      {8, "OMA nodes, leases and VM placements", kNodes, {},
       [](Database& db, const std::function<const SecretBox&()>&) { add_placement_lock(db); }},
      {9, "written-bytes baselines of pass disks", {}, {},
       [](Database& db, const std::function<const SecretBox&()>&) { add_written_baseline(db); }},
      {10, "takeovers of a dead node's VMs", kTakeovers},
      {11, "moves of VMs between live nodes", {}, {},
       [](Database& db, const std::function<const SecretBox&()>&) { add_takeover_kind(db); }},
      {12, "OMA nodes' SSH host keys and tunnel addresses", {}, {},
       [](Database& db, const std::function<const SecretBox&()>&) { add_node_tunnel_columns(db); }},
      {13, "last boot check of each VM", kBootChecks},
      {14, "last guest inspection of each VM", kInspections},
      {15, "the service's NBD client CA and the certificates it issued", kNbdClientCa},
  };
  return all;
}

int schema_version(Database& db) {
  ensure_table(db);
  auto rows = db.query("SELECT MAX(version) FROM schema_migrations");
  return rows.empty() ? 0 : static_cast<int>(rows[0].i64(0));
}

int migrate(Database& db, const std::function<const SecretBox&()>& secrets) {
  int current = schema_version(db);
  int known = migrations().back().version;
  if (current > known) {
    throw Error(fmt::format("{} has schema version {} but this OMA knows only up to {}: run the newer OMA "
                            "that wrote it, or restore a backup",
                            db.describe(), current, known));
  }
  int applied = 0;
  for (const auto& m : migrations()) {
    if (m.version <= current) continue;
    // MariaDB commits DDL implicitly, so a failed migration may be half applied there;
    // each statement is written to be the only one that can fail (fresh tables).
    db.transaction([&] {
      for (const auto& sql : m.statements) db.exec(sql);
      for (const auto& [engine, sql] : m.engine_statements) {
        if (engine == db.engine()) db.exec(sql);
      }
      if (m.code) m.code(db, secrets);
      db.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
              {int64_t{m.version}, m.name, now_ms()});
    });
    log::info("database {}: applied migration {} ({})", db.describe(), m.version, m.name);
    ++applied;
  }
  return applied;
}

}  // namespace mk::oma::db
