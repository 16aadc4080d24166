#include "vma/vma.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "protocol/names.h"
#include "vma/files.h"

namespace mk::vma {

Vma::Vma(VmaConfig config, TunnelStateProvider tunnel) : Vma(std::move(config), Tunnels{std::move(tunnel), {}, {}}) {}

Vma::Vma(VmaConfig config, Tunnels tunnels)
    : config_(std::move(config)), tunnels_(std::move(tunnels)), instance_(protocol::new_uuid()) {
  if (config_.state_dir.empty()) throw UsageError("no state directory (--state-dir)");
  if (config_.vcenter_url.empty() || config_.vcenter_user.empty() || config_.vcenter_password_file.empty()) {
    throw UsageError("vCenter URL, user and password file are required (--vcenter, --vcenter-user, "
                     "--vcenter-password-file)");
  }
  if (config_.token_file.empty()) config_.token_file = config_.state_dir + "/api.token";
  if (config_.nbd_psk_file.empty()) config_.nbd_psk_file = config_.state_dir + "/nbd-psk.keys";
  if (config_.nbd_certificates_dir.empty()) config_.nbd_certificates_dir = config_.state_dir + "/nbd-pki";
}

Vma::~Vma() { stop(); }

// The VMA's identity on its snapshots: STATE/snapshot-owner, made once. It outlives
// restarts, so that a restarted VMA recognises the leftovers of its crashed passes, and
// differs between VMAs, so that one never removes another's running pass.
static std::string snapshot_owner(const std::string& state_dir) {
  std::string path = state_dir + "/snapshot-owner";
  if (std::filesystem::exists(path)) return read_secret_file(path, "the VMA's snapshot owner");
  std::string hex = protocol::new_uuid();
  std::string owner = "vma-" + hex.substr(0, 8) + hex.substr(9, 4);
  write_private_file(path, owner + "\n");
  return owner;
}

void Vma::start() {
  std::filesystem::create_directories(config_.state_dir);
  ::chmod(config_.state_dir.c_str(), 0700);
  std::string token = read_secret_file(config_.token_file, "VMA API token (written by `vma pair`, or --token-file)");
  // The PSK, or the client certificate of an X.509 OMA: whichever pairing wrote.
  bool x509 = std::filesystem::exists(config_.nbd_certificates_dir + "/client-cert.pem");
  if (!x509 || std::filesystem::exists(config_.nbd_psk_file))
    read_secret_file(config_.nbd_psk_file, "NBD TLS PSK of the OMA (written by `vma pair`, or --nbd-psk-file; an "
                                           "OMA with X.509 gives a client certificate in STATE/nbd-pki instead)");
  std::string work = config_.state_dir + "/work";
  std::filesystem::remove_all(work);  // readers' sockets of an earlier run
  std::filesystem::create_directories(work);
  ::chmod(work.c_str(), 0700);

  VcenterConfig vc;
  vc.connect.url = config_.vcenter_url;
  vc.connect.user = config_.vcenter_user;
  vc.connect.password_file = config_.vcenter_password_file;
  if (!config_.vcenter_thumbprint.empty()) {
    vc.connect.tls.mode = vsphere::TlsPolicy::Mode::PinThumbprint;
    vc.connect.tls.thumbprint = config_.vcenter_thumbprint;
  } else {
    vc.connect.tls.ca_file = config_.vcenter_ca_file;
  }
  vc.snapshot_prefix = config_.snapshot_prefix;
  vc.snapshot_owner = snapshot_owner(config_.state_dir);
  vc.vddk.libdir = config_.vddk_libdir;
  vc.vddk.transports = config_.vddk_transports;
  vc.vddk.read_rate = config_.read_rate;
  vc.flat_datastores = config_.flat_datastores;
  vcenter_ = std::make_unique<VCenter>(vc);

  store_ = std::make_unique<JobStore>(config_.state_dir + "/jobs");
  RunnerOptions ro;
  ro.max_vms = config_.max_vms;
  ro.max_disks_per_vm = config_.max_disks_per_vm;
  // Several connections per disk only where both ends allow multi-conn (the engine falls
  // back to one otherwise, engine/copier.cpp). nbdkit's vddk plugin (1.32 and later) does
  // not advertise multi-conn (it has no can_multi_conn callback, so nbdkit answers false),
  // so a disk read through VDDK copies over one connection whatever this says; the lab's
  // flat-file reader (the file plugin) allows several.
  const int connections = nbd_connections_for(config_);
  ro.copy.connections = static_cast<unsigned>(connections);
  log::info("NBD connections per disk copy: {} ({}; used when the OMA's export and the disk's reader allow "
            "multi-conn)",
            connections,
            config_.nbd_connections > 0  ? "--nbd-connections"
            : nbd_through_ssh(config_) ? "the default for NBD through the SSH forward"
                                       : "the default for direct NBD");
  ro.nbd_via_port = config_.nbd_via_port;
  ro.nbd_via = config_.nbd_via;
  ro.work_dir = work;
  ro.target_outage_timeout = std::chrono::seconds(config_.target_outage_timeout_s);
  // Checkpoints outlive a restart (work/ does not): interrupted passes resume from them.
  ro.checkpoint_dir = config_.state_dir + "/checkpoints";
  std::filesystem::create_directories(ro.checkpoint_dir);
  ::chmod(ro.checkpoint_dir.c_str(), 0700);
  if (std::filesystem::exists(config_.nbd_psk_file))
    ro.target_tls.psk_file = std::filesystem::absolute(config_.nbd_psk_file).string();
  if (x509) ro.target_tls_x509.certificates_dir = std::filesystem::absolute(config_.nbd_certificates_dir).string();
  runner_ = std::make_unique<JobRunner>(ro, *vcenter_, *store_);
  runner_->recover();

  if (!cleanup_snapshots()) cleanup_ = std::thread([this] { cleanup_loop(); });

  api::ApiOptions ao;
  ao.listen_address = config_.listen_address;
  ao.port = config_.listen_port;
  ao.token = token;
  ao.instance = instance_;
  api_ = std::make_unique<api::ApiServer>(ao, *runner_, *vcenter_, tunnels_);
  api_->start();
  write_private_file(config_.state_dir + "/api.port", std::to_string(api_->port()) + "\n");
}

bool Vma::cleanup_snapshots() {
  try {
    std::vector<std::string> errors;
    // The snapshots of passes that resume (and of running ones) are not leftovers.
    int n = vcenter_->remove_all_our_snapshots([this](const std::string& vm) { return runner_->lock_vm(vm); }, errors,
                                               runner_->active_snapshots());
    log::info("start-up: {} leftover snapshot(s) of an earlier run removed", n);
    for (const auto& e : errors) log::warn("start-up: {}", e);
    return true;
  } catch (const std::exception& e) {
    log::error("start-up: removing leftover snapshots failed (trying again in 10 s): {}", e.what());
    return false;
  }
}

void Vma::cleanup_loop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, std::chrono::seconds(10), [this] { return stopping_; })) {
    lock.unlock();
    bool done = cleanup_snapshots();
    lock.lock();
    if (done) return;
  }
}

void Vma::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (cleanup_.joinable()) cleanup_.join();
  if (api_) api_->stop();
  if (runner_) runner_->shutdown();  // cancels passes; each removes its snapshot
}

}  // namespace mk::vma
