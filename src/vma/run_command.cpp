#include "vma/run_command.h"

#include <CLI/CLI.hpp>
#include <signal.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>

#include "common/config_file.h"
#include "common/error.h"
#include "common/log.h"
#include "common/sd_notify.h"
#include "common/units.h"
#include "vma/pairing/paired_state.h"
#include "vma/tunnel/tunnel_set.h"
#include "vma/vma.h"

namespace mk::vma {
namespace {

// "127.0.0.1:8081" -> address and port.
void parse_listen(const std::string& s, VmaConfig& c) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0) throw UsageError(fmt::format("--listen \"{}\": use ADDRESS:PORT", s));
  c.listen_address = s.substr(0, colon);
  try {
    size_t used = 0;
    c.listen_port = std::stoi(s.substr(colon + 1), &used);
    if (used != s.size() - colon - 1 || c.listen_port < 0 || c.listen_port > 65535) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    throw UsageError(fmt::format("--listen \"{}\": the port must be 0 to 65535", s));
  }
}

// --lab-flat-datastore NAME=DIR values; refused outright by a build without lab paths
// (the product reads VMware disks through VDDK only).
void parse_flat_datastores(const std::vector<std::string>& values, const RunCommandBuild& build, VmaConfig& c) {
  if (!values.empty() && !build.lab_paths) {
    throw UsageError(
        "--lab-flat-datastore is a lab path (reading a simulator's flat disk files instead of VDDK) and this vma is "
        "the product, built without lab paths: remove the option (or the lab-flat-datastore setting) and give "
        "--vddk-libdir; only the test build vma-lab accepts it");
  }
  for (const auto& v : values) {
    auto eq = v.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 >= v.size() || v[eq + 1] != '/') {
      throw UsageError(fmt::format("--lab-flat-datastore \"{}\": use NAME=/absolute/directory", v));
    }
    c.flat_datastores[v.substr(0, eq)] = v.substr(eq + 1);
  }
}

}  // namespace

int run_command(int argc, char** argv, TunnelStateProvider tunnel, RunCommandBuild build) {
  VmaConfig c;
  std::string listen = "127.0.0.1:8081", read_rate;
  std::vector<std::string> flat;
  bool verbose = false, no_tunnel = false, nbd_over_ssh = false;
  CLI::App app{"vma run: the VMware Migration Appliance daemon (API for the OMA, replication jobs)"};
  app.add_option("--state-dir", c.state_dir, "State directory (jobs, work files, api.port; token and PSK by default)")
      ->required();
  app.add_option("--vcenter", c.vcenter_url, "vCenter or ESXi SDK URL, https://HOST/sdk")->required();
  app.add_option("--vcenter-user", c.vcenter_user, "vCenter user")->required();
  app.add_option("--vcenter-password-file", c.vcenter_password_file, "File holding the vCenter password (mode 0600)")
      ->required();
  app.add_option("--vcenter-thumbprint", c.vcenter_thumbprint, "Pin vCenter's certificate (SHA-1, AA:BB:...)");
  app.add_option("--vcenter-ca-file", c.vcenter_ca_file, "CA bundle that signed vCenter's certificate");
  app.add_option("--listen", listen, "API address (default 127.0.0.1:8081; port 0 = any, written to STATE/api.port)");
  app.add_option("--token-file", c.token_file, "API bearer token issued by the OMA (default STATE/api.token)");
  app.add_option("--nbd-psk-file", c.nbd_psk_file, "NBD TLS PSK of the OMA's exports (default STATE/nbd-psk.keys)");
  app.add_option("--nbd-certificates", c.nbd_certificates_dir,
                 "X.509 OMAs: NBD client certificates directory (default STATE/nbd-pki, written by `vma pair`)");
  app.add_option("--max-disks-per-vm", c.max_disks_per_vm, "Disks of one VM copied at once (default 4)")
      ->check(CLI::Range(1, 64));
  app.add_option("--max-vms", c.max_vms, "VMs copied at once; more jobs wait (default 4)")->check(CLI::Range(1, 256));
  app.add_option("--nbd-connections", c.nbd_connections,
                 fmt::format("NBD connections per disk copy, used when the export and the disk's reader allow "
                             "multi-conn (default {} with --nbd-over-ssh, else {})",
                             kNbdConnectionsThroughSsh, kNbdConnectionsDirect))
      ->check(CLI::Range(1, 16));
  app.add_option("--snapshot-prefix", c.snapshot_prefix, "Name prefix of our snapshots (default migratekit-)");
  app.add_option("--vddk-libdir", c.vddk_libdir, "VDDK directory (default /opt/vmware-vix-disklib-distrib)");
  app.add_option("--vddk-transports", c.vddk_transports, "VDDK transports (default nbdssl:nbd)");
  app.add_option("--read-rate-limit", read_rate, "Cap on reading each source disk, bytes/s (e.g. 100M)");
  app.add_option("--target-outage-timeout", c.target_outage_timeout_s,
                 "Seconds a disk whose NBD target went away (tunnel cut, OMA restarting) keeps trying to resume from "
                 "its checkpoint before it fails (default 300)")
      ->check(CLI::Range(0, 86400));
  // A build without lab paths still knows the option, to refuse it with a reason rather
  // than "unexpected argument", but keeps it out of --help (and so of the man page).
  auto* lab_flat = app.add_option("--lab-flat-datastore", flat,
                                  "LAB ONLY (vcsim, tests, demo; never in production): NAME=DIR: datastore NAME is "
                                  "mounted at DIR; read its disks' flat files instead of VDDK");
  if (!build.lab_paths) lab_flat->group("");
  app.add_flag("--no-tunnel", no_tunnel, "Do not hold the SSH tunnel to the OMA even though the VMA is paired");
  app.add_flag("--nbd-over-ssh", nbd_over_ssh,
               "Carry NBD inside the SSH connection (a local forward) for sites that allow one port only");
  app.add_flag("-v,--verbose", verbose, "Log debugging details");
  // The configuration file: every option above is a setting of the same name
  // (common/config_file.h); the command line overrides it.
  std::string config_path;
  bool check_config = false;
  app.add_option("--config", config_path,
                 "TOML file of settings named like these options (max-vms = 4); options given here override it. "
                 "The service uses /etc/migratekit/vma.conf")
      ->configurable(false);
  app.add_flag("--check-config", check_config,
               "Check the configuration (--config, default /etc/migratekit/vma.conf, and these options), print the "
               "result and exit: 0 valid, 2 not")
      ->configurable(false);
  app.get_option("--help")->configurable(false);
  std::optional<config::ConfigFile> file;
  try {
    auto args = config::ConfigFile::command_line(app, argc, argv, "/etc/migratekit/vma.conf", file);
    app.parse(args);
    parse_listen(listen, c);
    parse_flat_datastores(flat, build, c);
    if (!read_rate.empty()) c.read_rate = parse_size(read_rate, "--read-rate-limit");
    if (check_config) {
      std::printf("vma run: the configuration is valid (%s and the command line)\n", file->path().c_str());
      return 0;
    }
  } catch (const CLI::ParseError& e) {
    if (file && e.get_exit_code() != 0) {
      std::fprintf(stderr, "vma run: %s\n", file->locate(e.what()).c_str());
      return 2;
    }
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vma run: %s\n", file ? file->locate(e.what()).c_str() : e.what());
    return 2;
  }
  if (verbose) log::set_level(log::Level::Debug);

  // Paired (STATE/pairing.json, written by `vma pair`): hold the tunnel to the OMA, or
  // one tunnel to each node of a service of OMA nodes (tunnel/tunnel_set.h).
  std::optional<PairedState> paired;
  try {
    if (!no_tunnel && std::filesystem::exists(c.state_dir + "/pairing.json")) paired = load_paired_state(c.state_dir);
    if (nbd_over_ssh && !paired) throw UsageError("--nbd-over-ssh needs the SSH tunnel: pair this VMA first (vma pair)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vma run: %s\n", e.what());
    return 2;
  }

  // Signals are taken synchronously by this thread; every other thread blocks them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  // The tunnels start once the API listens (its port is the forwards' target); the
  // health route may ask for their state from another thread meanwhile.
  std::unique_ptr<TunnelSet> tunnels;
  Tunnels api_tunnels{std::move(tunnel), {}, {}};
  if (paired) {
    std::string state_dir = c.state_dir;
    tunnels = std::make_unique<TunnelSet>(tunnel_config(*paired, 0), nbd_over_ssh,
                                          [state_dir](const std::vector<protocol::ServiceNode>& nodes) {
                                            store_service_nodes(state_dir, nodes);
                                          });
    TunnelSet* t = tunnels.get();
    api_tunnels.state = [t] { return t->combined(); };
    api_tunnels.list = [t] { return t->tunnels(); };
    api_tunnels.set_nodes = [t](const std::vector<protocol::ServiceNode>& nodes) { return t->apply(nodes); };
    if (nbd_over_ssh) c.nbd_via = [t](const protocol::NbdTarget& target) { return t->nbd_local_port(target); };
  }
  try {
    Vma vma(c, std::move(api_tunnels));
    vma.start();
    if (tunnels) {
      tunnels->start(vma.api_port(), paired->nodes);
      if (paired->nodes.empty())
        log::info("holding the SSH tunnel to {}:{} (OMA 127.0.0.1:{} -> this VMA's API{})", paired->ssh_host,
                  paired->ssh_port, paired->tunnel_port, nbd_over_ssh ? ", NBD inside SSH" : "");
      else
        log::info("holding an SSH tunnel to each of the {} OMA node(s) of the service (each node's {} -> this VMA's "
                  "API{})",
                  paired->nodes.size(), paired->tunnel_port, nbd_over_ssh ? ", NBD inside SSH" : "");
    }
    // The API listens now (the tunnel comes up on its own): tell systemd (Type=notify).
    notify_service_manager(fmt::format("READY=1\nSTATUS=API on port {}", vma.api_port()));
    int sig = 0;
    sigwait(&set, &sig);
    notify_service_manager("STOPPING=1");
    log::info("signal {}: stopping; running passes are cancelled and their snapshots removed", sig);
    vma.stop();
    if (tunnels) tunnels->stop();
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vma run: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vma run: %s\n", e.what());
    return 1;
  }
}

}  // namespace mk::vma
