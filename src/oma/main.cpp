// oma: the OSSEA Migration Appliance's control plane service.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <signal.h>

#include <cstdio>
#include <optional>
#include <functional>
#include <tuple>

#include "common/config_file.h"
#include "common/error.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "common/units.h"
#include "engine/tls_policy.h"
#include "oma/app.h"
#include "oma/exports/nbdkit_server.h"

namespace {

// A command that runs once instead of the service: prints what it did and returns 0, or
// prints why it failed and returns 2 (usage) or 1.
// Prints why the OMA or a command failed; the exit code: 2 for a usage error, else 1.
int failed(const std::exception& e) {
  std::fprintf(stderr, "oma: %s\n", e.what());
  return dynamic_cast<const mk::UsageError*>(&e) ? 2 : 1;
}

int run_once(const std::function<std::string()>& command) {
  try {
    std::printf("%s\n", command().c_str());
    return 0;
  } catch (const std::exception& e) {
    return failed(e);
  }
}

}  // namespace

int main(int argc, char** argv) {
  mk::engine::apply_tls_cipher_policy(argc, argv);
  mk::oma::OmaConfig c;
  CLI::App app{"oma: MigrateKit OSSEA control plane (database, NBD exports, jobs, REST API)"};
  bool verbose = false;
  app.add_option("--data-dir", c.data_dir, "State directory (database, volumes, exports, keys)")->required();
  app.add_option("--database", c.database_url, "sqlite:PATH (default DATA/oma.db) or mariadb://USER@HOST:PORT[,HOST2:PORT2...]/DB?password_file=F (several: a Galera cluster's servers, tried in order)");
  app.add_option("--api-listen", c.api_listen, "API listen address (default 0.0.0.0)");
  app.add_option("--api-port", c.api_port, "API port (default 8082; 0 = any free port, written to DATA/api.port)");
  app.add_option("--nbd-listen", c.nbd_listen, "NBD export server listen address (default 0.0.0.0)");
  app.add_option("--nbd-port", c.nbd_port, "NBD export server port (default 10809)");
  app.add_option("--nbd-advertise-host", c.nbd_advertise_host, "Host the VMA connects to for NBD (default 127.0.0.1)");
  app.add_option("--nbd-advertise-port", c.nbd_advertise_port,
                 "Port the VMA connects to for NBD when NAT or a port forward changes it (default: the port the "
                 "export server listens on; not with VMAs that send NBD inside SSH, --nbd-over-ssh)")
      ->check(CLI::Range(1, 65535));
  app.add_option("--exports-dir", c.exports_dir, "Directory of export symlinks (default DATA/exports)");
  app.add_option("--export-backend", c.export_backend, "nbdkit (default) or nbd-server (needs --tls-certificates and a fixed --nbd-port)");
  app.add_flag("--allow-unisolated-exports", c.allow_unisolated_exports,
               "Run the nbd-server backend although it verifies no NBD client and cannot keep VMAs apart (any client "
               "that reaches the NBD port reads and writes every export): only on a network where nothing else can");
  app.add_option("--tls-psk-file", c.tls_psk_file, "NBD TLS PSK keys file (default DATA/nbd-psk.keys, created)");
  app.add_option("--tls-certificates", c.tls_certificates_dir, "NBD TLS X.509 certificates directory instead of PSK");
  app.add_option("--vma-url", c.vma_url, "VMA API through the tunnel (default http://127.0.0.1:9081)");
  app.add_option("--vma-token-file", c.vma_token_file, "File holding the VMA's API token (sent as a bearer token)");
  app.add_option("--poll-interval-ms", c.poll_interval_ms, "Progress poll interval (default 1000)")->check(CLI::Range(10, 60000));
  app.add_option("--vma-timeout", c.vma_timeout_s, "Seconds without an answer from the VMA before a job fails (default 60)")
      ->check(CLI::Range(1, 86400));
  app.add_option("--volume-backend", c.volume_backend,
                 "local (default: sparse files in DATA/volumes) or cloudstack (CloudStack volumes attached to this "
                 "OMA; settings: PUT /api/v1/settings/cloudstack)")
      ->check(CLI::IsMember({"local", "cloudstack"}));
  app.add_option("--by-id-dir", c.cloudstack.by_id_dir,
                 "Where attached volumes appear as virtio-<serial> or scsi-0QEMU_QEMU_HARDDISK_<serial> links "
                 "(default /dev/disk/by-id)");
  app.add_flag("--cloudstack-allow-http", c.cloudstack.client.allow_insecure_http,
               "Accept an http:// CloudStack API URL (the API key and signed requests then travel in clear)");
  app.add_flag("--convert-guests", c.cutover.convert_guests,
               "Inspect the volumes before a cutover or test failover (refusing guests that cannot be converted "
               "before the source is touched), convert them for KVM with virt-v2v-in-place (cutover: after the "
               "final pass; test failover: after the volume snapshots) and, with the cloudstack backend, build "
               "the VM to match the guest (root disk, UEFI/BIOS, OS type, template per OS family)");
  int conversion_timeout_s = 1800;
  app.add_option("--conversion-timeout", conversion_timeout_s, "Seconds a guest conversion may take (default 1800)")
      ->check(CLI::Range(60, 86400));
  int boot_check_limit_s = 300;
  app.add_option("--boot-check-limit", boot_check_limit_s,
                 "Seconds a boot check's guest may take to boot, after its conversion (default 300; software "
                 "emulation where KVM cannot run guests is several times slower than KVM)")
      ->check(CLI::Range(10, 7200));
  int device_timeout_s = 120;
  app.add_option("--device-timeout", device_timeout_s,
                 "Seconds to wait for an attached volume's device to appear (default 120)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--public-api-url", c.public_api_url,
                 "API URL pairing bundles give VMAs (default https://NBD-ADVERTISE-HOST:API-PORT, http:// when the API "
                 "speaks plain HTTP)");
  app.add_option("--ssh-host", c.ssh_host, "Address VMAs open their SSH tunnel to (default the NBD advertise host)");
  app.add_option("--ssh-port", c.ssh_port, "This OMA's SSH port for VMA tunnels (default 22; 443 for one-port sites)")
      ->check(CLI::Range(1, 65535));
  app.add_option("--ssh-user", c.ssh_user, "SSH user VMAs log in as (default migratekit)");
  app.add_option("--ssh-host-key-file", c.ssh_host_key_file,
                 "This OMA's public SSH host key, pinned by VMAs (default /etc/ssh/ssh_host_ed25519_key.pub)");
  app.add_option("--authorized-keys-file", c.authorized_keys_file,
                 "OMA-managed authorized_keys for approved VMAs; point sshd's AuthorizedKeysFile at it (default DATA/vma_authorized_keys)");
  app.add_option("--tunnel-port-base", c.tunnel_port_base, "OMA loopback port of the first VMA's tunnel (default 9081; then 9082, ...)")
      ->check(CLI::Range(1, 65000));
  app.add_option("--tunnel-address", c.tunnel_address,
                 "Loopback address where this OMA's sshd takes VMAs' reverse forwards (default 127.0.0.1; another "
                 "127.x.y.z only where several OMA nodes share one machine, with sshd's GatewayPorts clientspecified)");
  app.add_option("--tunnel-session-helper", c.tunnel_session_helper,
                 "Unix socket of the tunnel-session helper that ends a revoked VMA's sshd session for an OMA that "
                 "runs unprivileged (the package's /run/migratekit-oma-end-tunnel.sock); default: the OMA ends it "
                 "itself, which needs root");
  app.add_flag("--keep-export-server", c.keep_export_server,
               "Keep the nbdkit export server running when the OMA stops or crashes (copies go on); the next "
               "start adopts it (recorded in DATA/export-server.json)");
  bool reset_admin_token = false;
  app.add_flag("--reset-admin-token", reset_admin_token,
               "Make a new admin API token (e.g. after the last one was revoked), write it to DATA/admin.token "
               "(readable by its owner only) and exit; give the --data-dir and --database the OMA runs with. The "
               "token is not printed; a running OMA accepts it at once");
  bool rotate_key = false;
  app.add_flag("--rotate-secrets-key", rotate_key,
               "Replace DATA/secrets.key with a new key, re-seal every stored secret with it in one transaction "
               "and exit (the old key is kept as DATA/secrets.key.retired-ID for older backups); stop the OMA first");
  bool stop_export_server = false;
  app.add_flag("--stop-export-server", stop_export_server,
               "Stop the kept export server recorded in DATA/export-server.json (by its PID) and exit");
  c.gui_port = 3001;
  app.add_option("--gui-listen", c.gui_listen, "GUI listen address (default 0.0.0.0)");
  app.add_option("--gui-port", c.gui_port, "GUI port (default 3001; 0 = any free port, written to DATA/gui.port; -1 = no GUI)")
      ->check(CLI::Range(-1, 65535));
  app.add_option("--gui-dir", c.gui_dir, "The built web app (default BIN/../web/dist, else BIN/../share/migratekit/web)");
  app.add_flag("--strict-api-replies", c.strict_api_replies,
               "Answer 500 when a reply does not match the OpenAPI document (tests; otherwise it is logged)");
  // The API's and the GUI's HTTP limits (common/bounded_http.h): milliseconds and counts.
  auto& hl = c.http_limits;
  for (auto [name, value, what] : {
           std::tuple<const char*, int*, const char*>{"--http-head-timeout-ms", &hl.head_timeout_ms,
                                                       "time a client has to send a request's head (default 10000)"},
           {"--http-idle-timeout-ms", &hl.idle_timeout_ms, "time a connection may wait for a request (default 5000)"},
           {"--http-body-timeout-ms", &hl.body_timeout_ms, "time a client has to send a body (default 30000)"},
           {"--http-handshake-timeout-ms", &hl.handshake_timeout_ms,
            "time an HTTPS client has to complete the TLS handshake (default 5000)"}}) {
    app.add_option(name, *value, fmt::format("API/GUI: {}", what))->check(CLI::Range(100, 600000));
  }
  app.add_option("--http-max-connections", hl.max_connections, "API/GUI: open connections per listener (default 512)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--http-max-connections-per-client", hl.max_connections_per_client,
                 "API/GUI: open connections per listener from one address (default 128)")
      ->check(CLI::Range(1, 100000));
  // HTTPS for the API and the GUI (oma/https.h).
  app.add_option("--https", c.https.mode,
                 "auto (default): HTTPS on every listener that is not loopback-only; on: HTTPS everywhere; off: "
                 "plain HTTP (loopback only, unless --insecure-http)")
      ->check(CLI::IsMember({"auto", "on", "off"}));
  app.add_flag("--insecure-http", c.https.insecure_http,
               "Allow --https off on an address other than loopback (tokens and pairing bundles then travel in clear)");
  app.add_option("--https-cert", c.https.cert_file,
                 "HTTPS certificate (PEM chain) instead of the OMA's own (made in DATA/https/ on first start)");
  app.add_option("--https-key", c.https.key_file, "The --https-cert's private key (PEM, unencrypted)");
  // More than one OMA over one database (issue 18): none of these without --node-id.
  auto& node = c.node;
  app.add_option("--node-id", node.node_id,
                 "This OMA as a node of several over one MariaDB database (a-z 0-9 . _ -): registers it and holds "
                 "its lease (default: none, a single OMA)");
  app.add_option("--node-cloudstack-vm-id", node.cloudstack_vm_id, "With --node-id: this OMA's VM in CloudStack");
  app.add_option("--node-volume-slots", node.volume_slots,
                 "With --node-id: data volumes this node's VM may hold (default 32, KVM's cap; 6 on other hypervisors)")
      ->check(CLI::Range(1, 4096));
  std::string node_disk_space = "0";
  app.add_option("--node-disk-space", node_disk_space,
                 "With --node-id: replica space this node may hold (e.g. 20T; default 0: not limited by space)");
  app.add_option("--node-lease-ms", node.lease_ms,
                 "With --node-id: the node's lease by the database's clock, renewed every third of it (default 15000)")
      ->check(CLI::Range(300, 600000));
  app.add_flag("-v,--verbose", verbose, "Log debugging details");
  // The configuration file: every option above is a setting of the same name
  // (common/config_file.h); the command line overrides it.
  std::string config_path;
  bool check_config = false;
  app.add_option("--config", config_path,
                 "TOML file of settings named like these options (api-port = 8082); options given here override "
                 "it. The service uses /etc/migratekit/oma.conf")
      ->configurable(false);
  app.add_flag("--check-config", check_config,
               "Check the configuration (--config, default /etc/migratekit/oma.conf, and these options), print "
               "the result and exit: 0 valid, 2 not")
      ->configurable(false);
  for (auto* action : {"--reset-admin-token", "--rotate-secrets-key", "--stop-export-server", "--help"}) app.get_option(action)->configurable(false);
  std::optional<mk::config::ConfigFile> file;
  try {
    auto args = mk::config::ConfigFile::command_line(app, argc, argv, "/etc/migratekit/oma.conf", file);
    app.parse(args);
    node.disk_bytes = static_cast<int64_t>(mk::parse_size(node_disk_space, "--node-disk-space"));
    if (check_config) {
      mk::oma::check_config(c);
      std::printf("oma: the configuration is valid (%s and the command line)\n", file->path().c_str());
      return 0;
    }
  } catch (const CLI::ParseError& e) {
    if (file && e.get_exit_code() != 0) {
      std::fprintf(stderr, "oma: %s\n", file->locate(e.what()).c_str());
      return 2;
    }
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const mk::UsageError& e) {
    std::fprintf(stderr, "oma: %s\n", file ? file->locate(e.what()).c_str() : e.what());
    return 2;
  }
  if (verbose) mk::log::set_level(mk::log::Level::Debug);
  c.cloudstack.device_timeout = std::chrono::seconds(device_timeout_s);
  c.cutover.conversion_timeout = std::chrono::seconds(conversion_timeout_s);
  c.boot_check.conversion_timeout = std::chrono::seconds(conversion_timeout_s);
  c.boot_check.limit = std::chrono::seconds(boot_check_limit_s);
  if (c.cutover.convert_guests) c.cutover.conversion_log_dir = c.data_dir + "/logs";
  if (reset_admin_token) {
    return run_once([&] {
      return fmt::format("a new admin API token is in {} (readable by its owner only)", mk::oma::reset_admin_token(c));
    });
  }
  if (rotate_key) return run_once([&] { return mk::oma::rotate_secrets_key(c); });
  if (stop_export_server) {
    return run_once([&] { return mk::oma::stop_kept_export_server(mk::oma::kept_server_record_path(c.data_dir)); });
  }

  // Signals are taken synchronously by the main thread; every other thread blocks them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  try {
    mk::oma::Oma oma(c);
    oma.start();
    // The API and the GUI listen now: units that need the OMA may start (Type=notify).
    mk::notify_service_manager(fmt::format("READY=1\nSTATUS=API on port {}", oma.api_port()));
    int sig = 0;
    sigwait(&set, &sig);
    mk::notify_service_manager("STOPPING=1");
    mk::log::info("signal {}: stopping (active jobs resume at the next start)", sig);
    oma.stop();
    return 0;
  } catch (const std::exception& e) {
    return failed(e);
  }
}
