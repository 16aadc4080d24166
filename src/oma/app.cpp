#include "oma/app.h"

#include <fmt/format.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <ctime>
#include <filesystem>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/file_lock.h"
#include "common/files.h"
#include "common/host_name.h"
#include "common/log.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/db/migrations.h"
#include "oma/db/sealed_values.h"
#include "oma/errors.h"
#include "oma/exports/nbd_server.h"
#include "oma/exports/nbdkit_server.h"
#include "oma/exports/vma_isolated_exports.h"
#include "oma/names.h"
#include "oma/volumes/cloudstack_volumes.h"

namespace mk::oma {

namespace {

std::string database_url(const OmaConfig& c) {
  return c.database_url.empty() ? "sqlite:" + c.data_dir + "/oma.db" : c.database_url;
}

// A new admin token: its hash in the database first, then the token in DATA/admin.token
// (owner-only), so that the file never holds a token the database does not know.
// Returns the file's path.
std::string issue_admin_token(ConfigRepository& tokens, const std::string& data_dir, const std::string& name) {
  std::string token = new_token();
  tokens.insert_token({new_uuid(), name, TokenRole::Admin, now_ms(), std::nullopt}, sha256_hex(token));
  std::string path = data_dir + "/admin.token";
  write_private_file(path, token + "\n");
  return path;
}

// Pairing bundles hand these to VMAs, whose ssh and NBD client take them: nothing they
// could read as an option or a URI part.
void check_pairing_values(const OmaConfig& c) {
  for (auto [option, host] :
       {std::pair{"--nbd-advertise-host", c.nbd_advertise_host}, std::pair{"--ssh-host", c.ssh_host}}) {
    if (!is_host_name_or_ip(host))
      throw UsageError(fmt::format("{} '{}': expected a host name (RFC 1123) or an IP address", option,
                                   host.substr(0, 64)));
  }
  const std::string& user = c.ssh_user;
  if (user.empty() || user.size() > 32 || user[0] == '-' ||
      user.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.-") != std::string::npos)
    throw UsageError(fmt::format("--ssh-user '{}': expected a user name (lowercase letters, digits, _ . -; not "
                                 "starting with -)", user.substr(0, 64)));
}

// The names the OMA is known by, for the certificate it makes.
std::vector<std::string> https_names(const OmaConfig& c) {
  std::vector<std::string> names{c.nbd_advertise_host, c.ssh_host};
  std::string url = c.public_api_url;
  if (size_t p = url.find("://"); p != std::string::npos) {
    std::string rest = url.substr(p + 3);
    rest = rest.substr(0, rest.find('/'));
    if (!rest.empty() && rest[0] == '[') names.push_back(rest.substr(1, rest.find(']') - 1));
    else names.push_back(rest.substr(0, rest.find(':')));
  }
  return names;
}

// A host as it goes into a URL (an IPv6 address in brackets).
std::string url_host(const std::string& host) {
  return host.find(':') != std::string::npos ? "[" + host + "]" : host;
}

}  // namespace

void check_config(const OmaConfig& config) {
  if (config.data_dir.empty()) throw UsageError("--data-dir is required");
  OmaConfig c = config;
  if (c.ssh_host.empty()) c.ssh_host = c.nbd_advertise_host;
  check_pairing_values(c);
  if (c.volume_backend != "local" && c.volume_backend != "cloudstack")
    throw UsageError(fmt::format("--volume-backend {}: expected local or cloudstack", c.volume_backend));
  if (c.export_backend != "nbdkit" && c.export_backend != "nbd-server")
    throw UsageError(fmt::format("--export-backend {}: expected nbdkit or nbd-server", c.export_backend));
  if (c.export_backend == "nbd-server" && !c.allow_unisolated_exports) {
    throw UsageError(
        "--export-backend nbd-server: nbd-server verifies no NBD client certificate and cannot keep VMAs apart, so any "
        "client that reaches the NBD port could read and overwrite every VM's disks. Use the nbdkit backend (the "
        "default), which serves each VMA only its own VMs' disks; to run nbd-server anyway on a network where only "
        "your VMAs reach that port, add --allow-unisolated-exports");
  }
  if (c.keep_export_server && c.export_backend != "nbdkit")
    throw UsageError("--keep-export-server works with the nbdkit export backend only");
  {
    int a = 0, b = 0, x = 0, d = 0;
    char tail = 0;
    const std::string& t = c.tunnel_address;
    if (std::sscanf(t.c_str(), "%d.%d.%d.%d%c", &a, &b, &x, &d, &tail) != 4 || a != 127 || b < 0 || b > 255 ||
        x < 0 || x > 255 || d < 0 || d > 255 || t.find_first_not_of("0123456789.") != std::string::npos)
      throw UsageError(fmt::format("--tunnel-address '{}': expected an IPv4 loopback address (127.x.y.z)",
                                   t.substr(0, 64)));
  }
  if (!c.node.node_id.empty() && !valid_node_id(c.node.node_id))
    throw UsageError(fmt::format("--node-id '{}': expected 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a "
                                 "letter or digit",
                                 c.node.node_id.substr(0, 64)));
}

namespace {

// The database of the OMA configured by `config`, migrated, for a command that runs
// instead of the service. Throws UsageError when the SQLite database does not exist.
std::unique_ptr<db::Database> open_for_command(const OmaConfig& config) {
  if (config.data_dir.empty()) throw UsageError("--data-dir is required");
  std::string url = database_url(config);
  if (url.rfind("sqlite:", 0) == 0 && !std::filesystem::exists(url.substr(7))) {
    throw UsageError(fmt::format("no OMA database at {}: give the --data-dir (and --database) the OMA runs with",
                                 url.substr(7)));
  }
  auto db = db::open_database(url);
  std::optional<SecretBox> key;  // read only if a migration re-seals values
  db::migrate(*db, [&]() -> const SecretBox& {
    if (!key) key = SecretBox::existing(config.data_dir + "/secrets.key");
    return *key;
  });
  return db;
}

// One OMA process per data directory: the service holds DATA/oma.lock while it runs.
std::string lock_file(const std::string& data_dir) { return data_dir + "/oma.lock"; }

}  // namespace

std::string reset_admin_token(const OmaConfig& config) {
  auto db = open_for_command(config);
  ConfigRepository tokens(*db);
  return issue_admin_token(tokens, config.data_dir, "admin (oma --reset-admin-token)");
}

std::string rotate_secrets_key(const OmaConfig& config) {
  auto db = open_for_command(config);
  auto lock = FileLock::try_acquire(lock_file(config.data_dir));
  if (!lock) {
    throw Error(fmt::format("an OMA is running on {} (it holds {}) and keeps the current key in memory: stop it "
                            "(systemctl stop migratekit-oma), and every other OMA node using {}, then run this again",
                            config.data_dir, lock_file(config.data_dir), db->describe()));
  }
  KeyRotation r = rotate_secrets_key(*db, config.data_dir + "/secrets.key");
  return fmt::format("re-sealed {} value(s) in {} with a new secrets key (key id {}); the old key is now {}: keep it "
                     "only as long as you keep database backups made before now, then delete it. Other OMA nodes "
                     "using this database need a copy of the new {}/secrets.key",
                     r.values, db->describe(), r.key_id.substr(0, 16), r.retired_key_file, config.data_dir);
}

Oma::Oma(OmaConfig config) : config_(std::move(config)) {
  check_config(config_);
  if (config_.ssh_host.empty()) config_.ssh_host = config_.nbd_advertise_host;
  std::error_code ec;
  std::filesystem::create_directories(config_.data_dir, ec);
  if (ec) throw Error(fmt::format("cannot create the data directory {}: {}", config_.data_dir, ec.message()));
  ::chmod(config_.data_dir.c_str(), 0700);
  config_.database_url = database_url(config_);
  if (config_.exports_dir.empty()) config_.exports_dir = config_.data_dir + "/exports";
  // A node attaches its volumes to its own VM (the settings' MAC names one VM for all).
  if (config_.cloudstack.oma_vm_id.empty()) config_.cloudstack.oma_vm_id = config_.node.cloudstack_vm_id;
  if (config_.tls_psk_file.empty() && config_.tls_certificates_dir.empty()) {
    config_.tls_psk_file = config_.data_dir + "/nbd-psk.keys";
  }
  if (config_.authorized_keys_file.empty()) config_.authorized_keys_file = config_.data_dir + "/vma_authorized_keys";
}

Oma::~Oma() { stop(); }

std::string Oma::read_vma_token() const {
  if (config_.vma_token_file.empty()) return "";
  std::ifstream in(config_.vma_token_file);
  std::string token;
  std::getline(in, token);
  while (!token.empty() && std::isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
  if (token.empty()) throw UsageError(fmt::format("--vma-token-file {}: unreadable or empty", config_.vma_token_file));
  return token;
}

void Oma::ensure_psk() {
  if (config_.tls_psk_file.empty() || std::filesystem::exists(config_.tls_psk_file)) return;
  unsigned char key[32];
  if (RAND_bytes(key, sizeof key) != 1) throw Error("cannot generate the NBD TLS key: random generator failed");
  std::string hex;
  for (unsigned char c : key) hex += fmt::format("{:02x}", c);
  write_private_file(config_.tls_psk_file, "oma:" + hex + "\n");
  log::info("created the NBD TLS PSK file {} (give the VMA a copy)", config_.tls_psk_file);
}

bool Oma::prepare_nbd_client_ca() {
  if (config_.tls_certificates_dir.empty()) return false;
  nbd_client_ca_ = std::make_unique<NbdClientCa>(config_.data_dir + "/nbd-x509", config_.tls_certificates_dir, *db_,
                                                 *secrets_, config_.node.node_id);
  return nbd_client_ca_->sync(approved_vma_ids(repos_->vmas));
}

void Oma::bootstrap_token() {
  if (repos_->config.count_tokens() > 0) return;
  std::string path = issue_admin_token(repos_->config, config_.data_dir, "admin (first start)");
  log::info("first start: the admin API token is in {} (readable by its owner only)", path);
}

void Oma::start() {
  lock_ = FileLock::try_acquire(lock_file(config_.data_dir));
  if (!lock_) {
    throw Error(fmt::format("another OMA is running on the data directory {} (it holds {}): stop it, or give this "
                            "one another --data-dir",
                            config_.data_dir, lock_file(config_.data_dir)));
  }
  https_ = prepare_https(config_.https, config_.data_dir, config_.api_listen,
                         config_.gui_port >= 0 ? config_.gui_listen : "", https_names(config_));
  db_ = db::open_database(config_.database_url);
  // The key is read for the migration only if it has values to re-seal; a key it
  // needs but cannot find is a refusal naming the file (sealed_values.h).
  const std::string key_file = config_.data_dir + "/secrets.key";
  std::optional<SecretBox> migration_key;
  db::migrate(*db_, [&]() -> const SecretBox& {
    if (!migration_key) migration_key = SecretBox::existing(key_file);
    return *migration_key;
  });
  repos_ = std::make_unique<Repositories>(*db_);
  secrets_ = open_secrets_key(*db_, key_file);
  bootstrap_token();
  ensure_psk();

  cloudstack_ = std::make_unique<CloudStackTarget>(repos_->config, *secrets_, config_.cloudstack);
  if (config_.volume_backend == "local") {
    volume_backend_ = std::make_unique<LocalVolumeBackend>(config_.data_dir + "/volumes");
  } else if (config_.volume_backend == "cloudstack") {
    cloudstack_checks_ = std::make_unique<CloudStackChecks>(*cloudstack_, repos_->vms, repos_->storage);
    volume_backend_ = std::make_unique<CloudStackVolumeBackend>([t = cloudstack_.get()] {
      auto session = t->session();
      // The volumes live as long as the session that owns their client.
      return std::shared_ptr<const cloudstack::CloudStackVolumes>(session, session->volumes.get());
    });
  } else {
    throw UsageError(fmt::format("--volume-backend {}: expected local or cloudstack", config_.volume_backend));
  }
  volumes_ = std::make_unique<VolumeManager>(repos_->storage, *volume_backend_);
  volumes_->remove_unrecorded();  // before recovery starts any job
  ExportServerConfig ec;
  // The router reads the directory at every connection: a change needs no restart.
  prepare_nbd_client_ca();
  ec.exports_dir = config_.exports_dir;
  ec.listen_address = config_.nbd_listen;
  ec.port = config_.nbd_port;
  ec.tls = {config_.tls_psk_file, config_.tls_certificates_dir};
  ec.log_path = config_.data_dir + "/export-server.log";
  ec.keep_running = config_.keep_export_server;
  ec.record_path = kept_server_record_path(config_.data_dir);
  // A node's nbdkit servers write only while its lease is held (the written filter's
  // lease-file=; start_node_lease keeps the deadline): a frozen node's servers stop
  // writing before another node may take its VMs over.
  if (!config_.node.node_id.empty()) ec.lease_file = lease_deadline_path();
  if (ec.keep_running && config_.export_backend != "nbdkit") {
    throw UsageError("--keep-export-server works with the nbdkit export backend only");
  }
  VmaIsolatedExports* isolated = nullptr;  // owned by export_server_
  if (config_.export_backend == "nbdkit") {
    // One nbdkit per approved VMA behind the NBD router (vma_isolated_exports.h). PSK: the
    // router routes by the ClientHello's PSK identity and each nbdkit does TLS with its
    // VMA's key. X.509: the router ends TLS with the directory the OMA assembles
    // (NbdClientCa), verifies the client's certificate and routes by its CN.
    if (nbd_client_ca_) ec.tls = {"", nbd_client_ca_->nbdkit_dir(), /*verify_peer=*/true};
    auto server = std::make_unique<VmaIsolatedExports>(
        ec, config_.data_dir + "/nbd-isolation",
        [vms = &repos_->vms](const std::string& vm_id) { return vms->vm_vma(vm_id); });
    isolated = server.get();
    export_server_ = std::move(server);
  } else if (config_.export_backend == "nbd-server") {
    export_server_ = std::make_unique<NbdServerExportServer>(ec);
  } else {
    throw UsageError(fmt::format("--export-backend {}: expected nbdkit or nbd-server", config_.export_backend));
  }
  export_server_->start();
  if (!isolated) {  // allowed by --allow-unisolated-exports (check_config)
    log::warn("the nbd-server export backend verifies no NBD client and cannot keep VMAs apart: any client that "
              "reaches port {} may read and write every export; use the nbdkit backend (the default), which serves "
              "each VMA only its own VMs' disks",
              export_server_->port());
  }
  // The lease before any job resumes: a node touches volumes only while it holds it.
  if (!config_.node.node_id.empty()) start_node_lease();
  exports_ = std::make_unique<ExportManager>(repos_->storage, *export_server_);
  PairingConfig pc;
  pc.ssh_host = config_.ssh_host;
  pc.ssh_port = config_.ssh_port;
  pc.ssh_user = config_.ssh_user;
  pc.ssh_host_key_file = config_.ssh_host_key_file;
  pc.authorized_keys_file = config_.authorized_keys_file;
  pc.tunnel_port_base = config_.tunnel_port_base;
  pc.tunnel_session_helper = config_.tunnel_session_helper;
  pc.tunnel_address = config_.tunnel_address;
  if (lease_) {
    // The service's live nodes with their host keys, by the database's clock: what
    // bundles carry and every node tells its VMAs (vma_node_sync.h).
    pc.service_nodes = [nodes = &repos_->nodes] {
      std::vector<protocol::ServiceNode> out;
      for (const auto& v : nodes->list_nodes().nodes) {
        const NodeRecord& n = v.node;
        if (v.lease != LeaseState::Alive || n.ssh_host_key.empty()) continue;
        out.push_back({n.node_id, n.ssh_host, static_cast<int>(n.ssh_port), n.ssh_host_key, n.tunnel_address,
                       n.nbd_host, static_cast<int>(n.nbd_port)});
        if (out.size() == protocol::kMaxServiceNodes) break;
      }
      return out;
    };
  }
  pc.nbd_host = config_.nbd_advertise_host;
  pc.nbd_port = export_server_->port();
  pc.nbd_advertise_port = advertised_nbd_port();
  pc.nbd_psk_file = config_.tls_psk_file;
  pc.nbd_certificates_dir = config_.tls_certificates_dir;
  pc.nbd_client_ca = nbd_client_ca_.get();
  if (isolated) pc.set_nbd_access = [isolated](const std::vector<VmaNbdAccess>& a) { isolated->set_vma_access(a); };
  pairing_ = std::make_unique<PairingService>(repos_->vmas, repos_->vms, *secrets_, pc);
  pairing_->sync_access();
  if (lease_) {
    VmaNodeSyncOptions so;
    so.interval = std::chrono::milliseconds(std::clamp(config_.node.lease_ms / 3, 100, 5000));
    vma_sync_ = std::make_unique<VmaNodeSync>(*pairing_, repos_->vmas, so);
    vma_sync_->start();
  }

  vma_ = std::make_unique<HttpVmaClient>(config_.vma_url, std::chrono::seconds(10), read_vma_token());
  JobOptions jo;
  // The VMA that serves a VM: the paired VMA that discovered it, else the default one.
  auto vma_for = [this](const std::string& vm_id) {
    auto paired = pairing_->client_for_vm(vm_id);
    return paired ? paired : std::shared_ptr<VmaClient>(vma_.get(), [](VmaClient*) {});  // not owned
  };
  jo.vma_for_vm = vma_for;
  jo.poll_interval = std::chrono::milliseconds(config_.poll_interval_ms);
  jo.vma_timeout = std::chrono::seconds(config_.vma_timeout_s);
  jo.nbd_host = config_.nbd_advertise_host;
  jo.nbd_port = advertised_nbd_port();
  jo.nbd_tls = nbd_client_ca_ ? protocol::NbdTls::X509 : protocol::NbdTls::Psk;
  jo.target = cloudstack_checks_.get();
  if (lease_) {
    placed_checks_ = std::make_unique<PlacedTargetChecks>(repos_->placements, *lease_, cloudstack_checks_.get());
    jo.target = placed_checks_.get();
  }
  jo.slot_poll_interval = std::chrono::milliseconds(config_.volume_slot_poll_ms);
  if (lease_) {
    // Only the jobs of the VMs placed here (or nowhere yet) are this node's to resume.
    jo.runs_here = [this](const std::string& vm_id) {
      auto owner = repos_->takeovers.owner_of(vm_id);
      return !owner || *owner == config_.node.node_id;
    };
    // A drained node's VM, or one an operator moves, moves at its next pass: the pass
    // goes to the node its volumes move to (NodeFailover::move_before_pass).
    jo.hand_off = [this](const JobRecord& job) -> JobOptions::HandOff {
      if (!failover_) return {};
      PassMove m = failover_->move_before_pass(job.vm_id);
      return {m.handed_off, m.message};
    };
  }
  // The automatic boot check after an incremental pass and inspection after a pass
  // (both services exist before any job runs: they are built right below, before
  // recover()). A boot check started here inspects the guest itself, so the inspection
  // after it then finds the VM busy and leaves it to the check.
  jo.pass_completed = [this](const JobRecord& job) {
    if (boot_checks_) boot_checks_->after_pass(job);
    if (inspections_) inspections_->after_pass(job);
  };
  jobs_ = std::make_unique<JobManager>(repos_->vms, repos_->jobs, *volumes_, *exports_, *vma_, jo);
  InspectionConfig inspection = config_.inspection;
  inspection.conversion_enabled = config_.cutover.convert_guests;
  inspections_ = std::make_unique<InspectionService>(repos_->vms, repos_->jobs, repos_->storage, repos_->inspections,
                                                     repos_->config, *jobs_, vma_for, inspection);
  BootCheckConfig boot_check = config_.boot_check;
  boot_check.inspected = [this](const VmRecord& vm, const std::string& job_id, const guest::GuestInspection& g) {
    inspections_->store(vm, job_id, "boot_check", g);
  };
  if (boot_check.scratch_dir.empty()) boot_check.scratch_dir = config_.data_dir + "/boot-checks";
  if (boot_check.log_dir.empty()) boot_check.log_dir = config_.data_dir + "/logs";
  boot_check.conversion_at_cutover = config_.cutover.convert_guests;
  boot_checks_ = std::make_unique<BootCheckService>(repos_->vms, repos_->jobs, repos_->storage, repos_->boot_checks,
                                                    repos_->config, *jobs_, boot_check);
  CutoverConfig cutover_config = config_.cutover;
  cutover_config.inspected = [this](const VmRecord& vm, const std::string& job_id, const std::string& started_by,
                                    const guest::GuestInspection& g) {
    inspections_->store(vm, job_id, started_by, g);
  };
  if (lease_) {
    // A VM cut over holds no slot any more: its placement goes, queued VMs are placed,
    // and a dead node's VMs that waited for room can be taken over.
    cutover_config.volumes_left_oma = [this](const std::string& vm_id) {
      if (repos_->placements.release_vm(vm_id))
        log::info("node {}: VM {} cut over: its volume slots here are free", config_.node.node_id, vm_id);
    };
  }
  cutover_ = std::make_unique<CutoverService>(repos_->vms, repos_->jobs, repos_->storage, *jobs_, *exports_, vma_for,
                                              *cloudstack_, config_.volume_backend == "cloudstack", cutover_config);
  if (lease_) {
    // The fence before any job resumes: every export change checks ownership first.
    FailoverOptions fo;
    fo.interval = std::chrono::milliseconds(std::max(100, config_.node.lease_ms / 3));
    fo.take_over = config_.volume_backend == "cloudstack";
    if (!fo.take_over)
      log::warn("node {}: with local volumes a dead node's VMs cannot be taken over (their volumes are files on "
                "its machine); this node only fences itself off VMs placed elsewhere",
                config_.node.node_id);
    failover_ = std::make_unique<NodeFailover>(repos_->takeovers, *lease_, takeover_actions(), fo);
    exports_->set_fence([f = failover_.get()](const std::string& vm_id) { f->check_owner(vm_id); });
    // Exports of VMs lost while this node was away are withdrawn first. No takeover yet:
    // one starts passes, which recovery below would then find active.
    failover_->fence_now();
  }
  int recovered = jobs_->recover();
  if (recovered) log::info("recovered {} active job(s)", recovered);
  if (failover_) failover_->start();

  start_event_services();
  api::ApiConfig ac;
  ac.listen_address = config_.api_listen;
  ac.port = config_.api_port;
  ac.strict_replies = config_.strict_api_replies;
  ac.limits = config_.http_limits;
  ac.tls = https_.api;
  api_ = std::make_unique<api::ApiServer>(repos_->config, ac);
  api_->add_routes(api::all_routes(
      {*repos_, *jobs_, *export_server_, *secrets_, pairing_.get(), *cutover_, *events_, *scheduler_, *vma_,
       config_.node.node_id, boot_checks_.get(), inspections_.get()}));
  if (config_.gui_port >= 0) {
    gui::GuiConfig gc;
    gc.listen_address = config_.gui_listen;
    gc.port = config_.gui_port;
    gc.dist_dir = config_.gui_dir;
    gc.limits = config_.http_limits;
    gc.tls = https_.gui;
    gui_ = std::make_unique<gui::GuiServer>(*api_, gc);
  }
  api_->start();
  // The API port is known only now (it may be 0 = any): tell it to pairing bundles.
  // VMAs pin the certificate when the URL leads to this OMA's HTTPS listener.
  std::string api_url = config_.public_api_url.empty() ? fmt::format("{}://{}:{}", https_.api ? "https" : "http",
                                                                     url_host(config_.nbd_advertise_host), api_->port())
                                                       : config_.public_api_url;
  bool pinned = https_.api && api_url.rfind("https://", 0) == 0;
  pairing_->set_api_url(api_url, pinned ? std::optional(https_.fingerprint) : std::nullopt);
  write_private_file(config_.data_dir + "/api.port", std::to_string(api_->port()) + "\n");
  if (lease_) lease_->set_api_url(api_url);
  if (gui_) {
    gui_->start();
    write_private_file(config_.data_dir + "/gui.port", std::to_string(gui_->port()) + "\n");
  }
}

int Oma::advertised_nbd_port() const {
  return config_.nbd_advertise_port > 0 ? config_.nbd_advertise_port : export_server_->port();
}

void Oma::start_node_lease() {
  NodeRecord self;
  self.node_id = config_.node.node_id;
  self.cloudstack_vm_id = config_.node.cloudstack_vm_id;
  self.nbd_host = config_.nbd_advertise_host;
  self.nbd_port = advertised_nbd_port();
  self.ssh_host = config_.ssh_host;
  self.ssh_port = config_.ssh_port;
  self.tunnel_address = config_.tunnel_address;
  {
    // The host key VMAs pin for this node; unreadable: VMAs are not told of this node
    // (logged: pairing bundles need the key too).
    std::ifstream in(config_.ssh_host_key_file);
    std::string line;
    if (in && std::getline(in, line)) {
      std::istringstream f(line);
      std::string type, blob;
      f >> type >> blob;
      if (!type.empty() && !blob.empty()) self.ssh_host_key = type + " " + blob;
    }
    if (self.ssh_host_key.empty())
      log::warn("node {}: cannot read the SSH host key {}: VMAs will not hold a tunnel to this node until it can",
                self.node_id, config_.ssh_host_key_file);
  }
  self.api_url = config_.public_api_url;
  self.volume_slots = config_.node.volume_slots;
  self.disk_bytes = config_.node.disk_bytes;
  NodeLeaseOptions lo;
  lo.lease = std::chrono::milliseconds(config_.node.lease_ms);
  lo.renew_every = lo.lease / 3;
  lo.start_wait = 2 * lo.lease;
  // The export servers' write deadline (ExportServerConfig::lease_file): a margin before
  // the database may expire the lease, counted from when the renewal began (its expiry is
  // a lease after a moment no earlier than that). CLOCK_BOOTTIME, which nbdkit reads too.
  lo.on_change = [path = lease_deadline_path(), lease = lo.lease](
                     std::optional<std::chrono::steady_clock::time_point> begun) {
    int64_t deadline = 0;  // lost: writes stop at once
    if (begun) {
      timespec ts{};
      ::clock_gettime(CLOCK_BOOTTIME, &ts);
      auto margin = std::max<std::chrono::milliseconds>(lease / 10, std::chrono::milliseconds(100));
      auto since = std::chrono::steady_clock::now() - *begun;
      deadline = static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec +
                 std::chrono::duration_cast<std::chrono::nanoseconds>(lease - margin - since).count();
    }
    try {
      write_private_file(path, std::to_string(std::max<int64_t>(deadline, 0)) + "\n");
    } catch (const std::exception& e) {
      // The servers then stop writing at the last deadline they read: safe, and loud.
      log::error("cannot write the export servers' lease deadline {}: {}", path, e.what());
    }
  };
  lease_db_ = db::open_database(config_.database_url);
  lease_nodes_ = std::make_unique<NodeRepository>(*lease_db_);
  lease_ = std::make_unique<NodeLease>(*lease_nodes_, self, lo);
  lease_->start();
}

std::string Oma::lease_deadline_path() const {
  return std::filesystem::absolute(config_.data_dir + "/node-lease.deadline").lexically_normal().string();
}

TakeoverActions Oma::takeover_actions() {
  TakeoverActions a;
  a.stop_copy = [this](const TakeoverRecord& t) {
    jobs_->vma_for(t.vm_id)->stop(*t.failed_job_id);
    repos_->jobs.add_event(*t.failed_job_id, EventLevel::Info,
                           fmt::format("node {}: the VMA confirmed that the interrupted pass's copy has stopped",
                                       config_.node.node_id));
  };
  a.detach = [this](const TakeoverRecord& t) {
    auto session = cloudstack_->session();
    const std::string& mine = session->volumes->config().oma_vm_id;
    for (const auto& d : repos_->vms.list_disks(t.vm_id)) {
      auto v = repos_->storage.find_volume(t.vm_id, d.disk_key);
      if (!v) continue;
      cloudstack::DiskRef ref{t.vm_id, d.disk_key, static_cast<uint64_t>(v->size_bytes)};
      cloudstack::Volume vol = session->volumes->require_owned(v->volume_id, ref);
      if (vol.virtual_machine_id.empty() || vol.virtual_machine_id == mine) continue;
      if (vol.virtual_machine_id != t.from_cloudstack_vm_id) {
        throw Error(fmt::format("volume {} (VM {} disk {}) is attached to CloudStack VM {}, which is neither the "
                                "VM of node {} (where it was: {}) nor this node's ({}): not touching it; find out "
                                "what holds it",
                                v->volume_id, t.vm_id, d.disk_key, vol.virtual_machine_id, t.from_node,
                                t.from_cloudstack_vm_id.empty() ? "not recorded" : t.from_cloudstack_vm_id, mine));
      }
      session->volumes->detach(v->volume_id, ref);
      log::info("node {}: volume {} (VM {} disk {}) detached from node {}'s VM {}", config_.node.node_id,
                v->volume_id, t.vm_id, d.disk_key, t.from_node, t.from_cloudstack_vm_id);
    }
  };
  a.attach = [this](const TakeoverRecord& t) {
    for (const auto& d : repos_->vms.list_disks(t.vm_id)) {
      auto v = repos_->storage.find_volume(t.vm_id, d.disk_key);
      if (!v) continue;
      std::string device = volume_backend_->ready(
          {v->volume_id, v->vm_id, v->disk_key, static_cast<uint64_t>(v->size_bytes)}, v->device_path);
      if (device != v->device_path) repos_->storage.set_volume_device(v->volume_id, device);
    }
  };
  a.export_volumes = [this](const TakeoverRecord& t) {
    for (const auto& d : repos_->vms.list_disks(t.vm_id)) {
      auto v = repos_->storage.find_volume(t.vm_id, d.disk_key);
      if (v) exports_->ensure_export(d, *v);
    }
  };
  // A dead node's cutover or test failover (its job failed by the claim): undone from
  // what it recorded, the VM restored once its volumes are here (README, "Failover").
  a.undo_job = [this](const TakeoverRecord& t) {
    JobRecord job = repos_->jobs.get_job(*t.failed_job_id);
    if (is_pass(job.kind) || only_reads_replicas(job.kind)) return;
    std::string done = cutover_->undo_interrupted(t.vm_id, job);
    log::info("node {}: VM {}: {} {} of node {} undone in CloudStack: {}", config_.node.node_id, t.vm_id, job.kind,
              job.job_id, t.from_node, done);
  };
  a.finish_undo = [this](const TakeoverRecord& t) {
    JobRecord job = repos_->jobs.get_job(*t.failed_job_id);
    if (!is_pass(job.kind) && !only_reads_replicas(job.kind)) {
      cutover_->finish_interrupted(t.vm_id, job, config_.node.node_id);
    }
  };
  a.resume = [this](const TakeoverRecord& t) {
    // A pass handed to this node (a move, or a pass started during a takeover) goes on here.
    for (const auto& j : repos_->jobs.active_jobs()) {
      if (j.vm_id != t.vm_id || !is_pass(j.kind)) continue;
      if (jobs_->adopt(j.job_id)) {
        repos_->jobs.add_event(j.job_id, EventLevel::Info,
                               fmt::format("node {}: the VM's volumes are here (detached from node {}'s VM, attached "
                                           "to this node's and exported here); this node goes on with the pass",
                                           config_.node.node_id, t.from_node));
      }
      return;
    }
    if (!t.failed_job_id) return;
    JobKind kind = repos_->jobs.get_job(*t.failed_job_id).kind;
    if (!is_pass(kind)) return;
    std::string job;
    try {
      job = jobs_->start(t.vm_id, kind);
    } catch (const Conflict& e) {
      log::info("node {}: VM {}: its pass is not started again here: {}", config_.node.node_id, t.vm_id, e.what());
      return;
    } catch (const UsageError& e) {
      if (kind != JobKind::Incremental) throw;
      job = jobs_->start(t.vm_id, JobKind::Full);  // a disk without a committed change ID
    }
    repos_->jobs.add_event(*t.failed_job_id, EventLevel::Info,
                           fmt::format("node {} started the VM's replication again as job {}", config_.node.node_id,
                                       job));
  };
  // The nbdkit backends serve what has a symlink in the exports directory (per-VMA
  // servers follow it: vma_isolated_exports.h).
  if (config_.export_backend == "nbdkit") {
    a.serves = [dir = config_.exports_dir](const std::string& name) {
      std::error_code ec;
      return std::filesystem::is_symlink(dir + "/" + name, ec);
    };
    a.withdraw = [this](const std::string& name) { export_server_->cut_off({name}); };
  } else if (auto* nbd_server = dynamic_cast<NbdServerExportServer*>(export_server_.get())) {
    // nbd-server: an export is its config file, a connection a forked child holding the
    // device open. Withdrawn: the file removed and those children ended; the daemon
    // itself keeps the export until its next start (nbd_server.h says what remains).
    auto device_of = [this](const std::string& name) {
      auto e = repos_->storage.find_export(name);
      return e ? e->device_path : std::string();
    };
    a.serves = [nbd_server, device_of](const std::string& name) {
      std::string device = device_of(name);
      return nbd_server->publishes(name) || (!device.empty() && !nbd_server->connections_on(device).empty());
    };
    a.withdraw = [nbd_server, device_of](const std::string& name) {
      nbd_server->unpublish(name);
      std::string device = device_of(name);
      if (!device.empty()) nbd_server->close_connections(device);
    };
  }
  return a;
}

void Oma::start_event_services() {
  gui::EventHubOptions eo;
  eo.poll_interval = std::chrono::milliseconds(config_.events_poll_ms);
  eo.heartbeat = std::chrono::milliseconds(config_.events_heartbeat_ms);
  events_ = std::make_unique<gui::EventHub>(repos_->jobs, &api::job_progress_json, eo);
  events_->start();
  jobs_->set_observer(events_.get());  // the jobs this node runs reach the stream at once
  SchedulerOptions so;
  so.check_interval = std::chrono::milliseconds(config_.scheduler_check_ms);
  so.start_job = [this](const std::string& vm_id, JobKind kind) { return jobs_->start(vm_id, kind); };
  scheduler_ = std::make_unique<Scheduler>(repos_->schedules, repos_->vms, so);
  scheduler_->start();
}

void Oma::stop() {
  // Event streams first: their open responses would keep the listeners from stopping.
  if (jobs_) jobs_->set_observer(nullptr);  // before the hub goes: no call into it after this
  if (events_) events_->stop();
  if (scheduler_) scheduler_->stop();
  if (gui_) gui_->stop();
  if (api_) api_->stop();
  if (failover_) failover_->stop();
  if (vma_sync_) vma_sync_->stop();
  // Running boot checks stop their tools and qemu and remove their overlays now; the
  // JobManager's shutdown below waits for their threads.
  if (boot_checks_) boot_checks_->stop();
  if (inspections_) inspections_->stop();
  if (jobs_) jobs_->shutdown();
  if (export_server_) export_server_->stop();
  // Last: the node held its lease while it could still touch volumes.
  if (lease_) lease_->stop();
  lock_.reset();
}

}  // namespace mk::oma
