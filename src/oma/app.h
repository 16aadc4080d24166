// Oma: the whole OMA service assembled from its configuration: database (migrated at
// start), volume backend, export server, job manager (recovering active jobs), VMA
// client and REST API. main.cpp runs one; tests run one in-process or as the binary.
//
// First start writes, in the data directory and readable by its owner only: the first
// admin API token (admin.token), the key that encrypts stored credentials
// (secrets.key) and, unless one is configured, the NBD TLS PSK (nbd-psk.keys), which
// the VMA needs too (pairing bundles carry it), and the authorized_keys file for paired
// VMAs (vma_authorized_keys, regenerated from the database). The actual API port is written to api.port once listening (useful
// with api_port 0). Owns everything it builds. start/stop from one thread.
// the VMA needs too. The actual API port is written to api.port once listening (useful
// with api_port 0), and the GUI port to gui.port. Owns everything it builds. start/stop from one thread.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/file_lock.h"
#include "oma/api/api_server.h"
#include "oma/crypto.h"
#include "oma/cutover/boot_check_service.h"
#include "oma/cutover/cloudstack_target.h"
#include "oma/cutover/cutover_service.h"
#include "oma/cutover/inspection_service.h"
#include "oma/db/database.h"
#include "oma/db/repositories.h"
#include "oma/exports/export_manager.h"
#include "oma/gui/event_hub.h"
#include "oma/gui/gui_server.h"
#include "oma/https.h"
#include "oma/jobs/scheduler.h"
#include "oma/jobs/job_manager.h"
#include "oma/nodes/node_failover.h"
#include "oma/nodes/node_lease.h"
#include "oma/nodes/placed_target_checks.h"
#include "oma/pairing/pairing_service.h"
#include "oma/pairing/vma_node_sync.h"
#include "oma/vma/vma_client.h"
#include "oma/volumes/volume_manager.h"

namespace mk::oma {

// This OMA as one node of several over one database (issue 18; node_repository.h). No
// node id: the single-node install, which never touches the node registry.
struct NodeConfig {
  std::string node_id;
  std::string cloudstack_vm_id;  // this OMA's VM in CloudStack
  int volume_slots = 32;         // data volumes this node's VM may hold (KVM's cap)
  int64_t disk_bytes = 0;        // replica space; 0: not limited by space
  int lease_ms = 15000;          // renewed every third of it
};

struct OmaConfig {
  std::string data_dir;                       // required
  std::string database_url;                   // default sqlite:DATA/oma.db
  std::string api_listen = "0.0.0.0";
  int api_port = 8082;                        // 0: any free port (written to DATA/api.port)
  std::string nbd_listen = "0.0.0.0";
  int nbd_port = 10809;
  std::string nbd_advertise_host = "127.0.0.1";  // how the VMA reaches the export server
  // The port VMAs are told for NBD (jobs, bundles, the node list) where NAT or a port
  // forward changes it; 0: the port the export server listens on.
  int nbd_advertise_port = 0;
  std::string exports_dir;                    // default DATA/exports
  std::string export_backend = "nbdkit";      // or "nbd-server"
  // nbd-server verifies no NBD client and cannot keep VMAs apart: refused without this.
  bool allow_unisolated_exports = false;
  bool keep_export_server = false;            // nbdkit outlives the OMA; adopted at the next start
  std::string tls_psk_file;                   // default DATA/nbd-psk.keys (created)
  std::string tls_certificates_dir;           // X.509 instead of PSK (the operator's; only read)
  std::string vma_url = "http://127.0.0.1:9081";
  std::string vma_token_file;                 // the VMA's API token (first line); "" = none sent
  int poll_interval_ms = 1000;
  int vma_timeout_s = 60;
  std::string volume_backend = "local";       // or "cloudstack" (settings: PUT /api/v1/settings/cloudstack)
  CloudStackOptions cloudstack;               // by-id directory, device wait, client timing
  int volume_slot_poll_ms = 5000;             // how often a pass waiting for data-volume slots looks again
  CutoverConfig cutover;
  // Boot checks (POST /api/v1/vms/{id}/boot-check): the boot limit and timeouts; the
  // overlays go to DATA/boot-checks and virt-v2v's logs to DATA/logs unless set.
  // conversion_at_cutover follows cutover.convert_guests.
  BootCheckConfig boot_check;
  // Inspections (POST /api/v1/vms/{id}/inspection, and after passes when guests are
  // converted): conversion_enabled follows cutover.convert_guests.
  InspectionConfig inspection;
  // VMA pairing and the SSH control tunnel (oma/pairing): what bundles tell VMAs.
  // VMs without a paired VMA use vma_url (the default VMA).
  std::string public_api_url;                 // default http(s)://<nbd_advertise_host>:<api port>
  std::string ssh_host;                       // default nbd_advertise_host
  int ssh_port = 22;
  std::string ssh_user = "migratekit";
  std::string ssh_host_key_file = "/etc/ssh/ssh_host_ed25519_key.pub";
  std::string authorized_keys_file;           // default DATA/vma_authorized_keys
  int tunnel_port_base = 9081;
  // Where this node's sshd takes VMAs' reverse forwards (a 127.x.y.z address): the VMA
  // API is called at <it>:<the VMA's tunnel port>. Another than 127.0.0.1 only where
  // several OMA nodes share one machine (tests, labs): each needs its own.
  std::string tunnel_address = "127.0.0.1";
  // Revocation ends the VMA's sshd session through the tunnel-session helper listening
  // on this Unix socket (oma/pairing/tunnel_session_helper.h; the package's
  // /run/migratekit-oma-end-tunnel.sock); "" = the OMA does it itself (as root).
  std::string tunnel_session_helper;
  // The GUI listener (web app + the same API). -1: none (the library default, so
  // in-process tests do not fight over a port); the oma command defaults to 3001.
  // 0: any free port, written to DATA/gui.port.
  std::string gui_listen = "0.0.0.0";
  int gui_port = -1;
  std::string gui_dir;                        // default BIN/../web/dist
  int events_poll_ms = 1000;                  // how often the event stream scans the database (other nodes' jobs)
  int events_heartbeat_ms = 15000;
  int scheduler_check_ms = 1000;              // how often due schedules are looked for
  // A reply that does not match the OpenAPI document becomes a 500 naming the mismatch
  // (tests); otherwise it is logged.
  bool strict_api_replies = false;
  // The API's and the GUI's HTTP limits, timeouts and connection caps (common/bounded_http.h).
  http::Limits http_limits;
  // HTTPS for the API and the GUI (oma/https.h): by default on every listener that is
  // not loopback-only, with the OMA's own certificate made in DATA/https/.
  HttpsOptions https;
  NodeConfig node;
};

// `oma --reset-admin-token`: makes a new admin API token in the database of the OMA
// configured by `config` (data directory and database as the OMA runs with; migrated
// first) and writes it to DATA/admin.token, readable by its owner only, replacing the
// file. Returns that path; the token itself is never logged or printed. For when no admin
// token is left (the last one revoked or lost): a running OMA accepts the new token at
// once. Other tokens are left as they are. Throws UsageError when the SQLite database
// does not exist (a wrong --data-dir), mk::Error when the database cannot be opened.
std::string reset_admin_token(const OmaConfig& config);

// `oma --rotate-secrets-key`: replaces DATA/secrets.key with a new key and re-seals every
// sealed value of the database with it (sealed_values.h: rotate_secrets_key). Refuses
// while an OMA runs on this data directory (it holds DATA/oma.lock). Returns what was
// done, for the operator; no secret in it. Throws UsageError as reset_admin_token does,
// mk::Error when the OMA runs or the old key does not open the values.
std::string rotate_secrets_key(const OmaConfig& config);

// The checks the OMA makes of its configuration before it changes anything (required
// values, backends, the values pairing bundles carry); `oma --check-config` runs them
// too. Throws UsageError naming the option ("--ssh-host 'x': ...").
void check_config(const OmaConfig& config);

class Oma {
 public:
  explicit Oma(OmaConfig config);
  ~Oma();
  void start();
  void stop();

  int api_port() const { return api_ ? api_->port() : 0; }
  int gui_port() const { return gui_ ? gui_->port() : 0; }
  Repositories& repos() { return *repos_; }
  ExportBackend& export_server() { return *export_server_; }
  JobManager& jobs() { return *jobs_; }
  gui::EventHub& events() { return *events_; }
  CutoverService& cutover() { return *cutover_; }
  BootCheckService& boot_checks() { return *boot_checks_; }
  InspectionService& inspections() { return *inspections_; }
  PairingService& pairing() { return *pairing_; }
  const OmaConfig& config() const { return config_; }
  NodeLease* node_lease() { return lease_.get(); }  // null: single node
  NodeFailover* node_failover() { return failover_.get(); }  // null: single node
  VmaNodeSync* vma_sync() { return vma_sync_.get(); }  // null: single node
  ExportManager& exports() { return *exports_; }

 private:
  void bootstrap_token();
  // X.509: makes or opens the client CA and writes nbdkit's certificates directory;
  // true when what nbdkit accepts changed (a kept server must read it again).
  bool prepare_nbd_client_ca();
  void ensure_psk();
  std::string read_vma_token() const;
  void start_event_services();  // the event stream and the scheduler
  void start_node_lease();      // with a node id: register, hold the lease
  // The NBD port VMAs are told: --nbd-advertise-port, else the export server's.
  int advertised_nbd_port() const;
  TakeoverActions takeover_actions();  // a node's takeover steps in CloudStack and exports
  // DATA/node-lease.deadline (absolute): the export servers' write deadline on a node.
  std::string lease_deadline_path() const;

  OmaConfig config_;
  std::optional<FileLock> lock_;  // DATA/oma.lock, from start() to stop()
  HttpsSetup https_;
  std::unique_ptr<db::Database> db_;
  std::unique_ptr<Repositories> repos_;
  std::unique_ptr<SecretBox> secrets_;
  std::unique_ptr<VolumeBackend> volume_backend_;
  std::unique_ptr<VolumeManager> volumes_;
  std::unique_ptr<NbdClientCa> nbd_client_ca_;  // X.509: VMAs' client certificates, nbdkit's directory
  std::unique_ptr<ExportBackend> export_server_;
  // The lease renews on a connection of its own: on the shared one it would wait behind
  // any long transaction (a migration, a big listing) and could be lost meanwhile.
  std::unique_ptr<db::Database> lease_db_;
  std::unique_ptr<NodeRepository> lease_nodes_;
  std::unique_ptr<NodeLease> lease_;
  std::unique_ptr<PlacedTargetChecks> placed_checks_;  // with a node id: passes placed on a node first
  std::unique_ptr<ExportManager> exports_;
  std::unique_ptr<NodeFailover> failover_;  // with a node id: takes dead nodes' VMs over, fences this one
  std::unique_ptr<VmaClient> vma_;
  std::unique_ptr<PairingService> pairing_;
  std::unique_ptr<VmaNodeSync> vma_sync_;  // with a node id: VMAs' access and node lists follow the database
  std::unique_ptr<JobManager> jobs_;
  std::unique_ptr<CloudStackTarget> cloudstack_;
  std::unique_ptr<CloudStackChecks> cloudstack_checks_;  // with the "cloudstack" backend only
  std::unique_ptr<CutoverService> cutover_;
  std::unique_ptr<BootCheckService> boot_checks_;
  std::unique_ptr<InspectionService> inspections_;
  std::unique_ptr<api::ApiServer> api_;
  std::unique_ptr<gui::EventHub> events_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<gui::GuiServer> gui_;
};

}  // namespace mk::oma
