// TunnelLab: an OMA (in-process, SQLite, its real nbdkit export server, API on a free
// loopback port) whose sshd is a real OpenSSH server on a free loopback port reading
// the OMA-managed authorized_keys file, plus what a VMA needs for tests: a stand-in for
// the VMA's API (GET /api/v1/health with the pairing token; the VMA daemon is another
// component) and helpers to pair a VMA with `vma pair` and run its tunnel.
//
// Owns every process and thread it starts (stopped by PID / joined). Not thread-safe.
#pragma once

#include "protocol/request_auth.h"

#include <httplib.h>

#include <atomic>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "oma/app.h"
#include "support/net.h"
#include "support/sshd_server.h"
#include "support/temp_dir.h"
#include "vma/pairing/paired_state.h"
#include "vma/tunnel/tunnel_supervisor.h"

namespace mk::tunnel_test {

struct Reply {
  int status = 0;
  nlohmann::json body;
  std::string raw;
};

// GET/POST against 127.0.0.1:port with an Authorization header ("" = none).
Reply http(const std::string& method, int port, const std::string& path, const std::string& authorization,
           const std::string& body = "");

// The VMA API stand-in: answers GET /api/v1/health (401 without the token) with the
// protocol's Health (and version header): the tunnel state `state()` gives, and this
// VMA's instance id.
class VmaApiStandIn {
 public:
  VmaApiStandIn(std::string token, std::string instance, mk::vma::TunnelStateProvider state);
  ~VmaApiStandIn();
  int port() const { return port_; }
  int requests() const { return requests_.load(); }

 private:
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  std::atomic<int> requests_{0};
  mk::protocol::NonceCache nonces_;
};

// A paired VMA: its state directory, its API stand-in and its tunnel.
struct Vma {
  mk::test::TempDir dir{"mk-vma"};
  std::string state_dir = dir.file("state");
  mk::vma::PairedState paired;
  std::string instance = mk::protocol::new_uuid();  // its API's vma_instance
  std::unique_ptr<VmaApiStandIn> api;
  std::unique_ptr<mk::vma::TunnelSupervisor> tunnel;
};

struct TunnelLabOptions {
  bool x509 = false;  // the OMA serves NBD with X.509 certificates (support/x509.h) instead of a PSK
  // The SSH user VMAs log in as. Another user than root (e.g. "nobody") gets the
  // package's sshd settings: its keys through AuthorizedKeysCommand (run as root here, as
  // oma in the package), and its sessions run as that user, as in production.
  std::string ssh_user = "root";
  std::string tunnel_session_helper;  // the OMA's --tunnel-session-helper socket ("" = none)
};

class TunnelLab {
 public:
  // x509: the OMA serves NBD with X.509 certificates (support/x509.h) instead of a PSK.
  explicit TunnelLab(bool x509 = false) : TunnelLab(TunnelLabOptions{.x509 = x509}) {}
  explicit TunnelLab(const TunnelLabOptions& options);
  ~TunnelLab();

  mk::oma::Oma& oma() { return *oma_; }
  mk::test::SshdServer& sshd() { return *sshd_; }
  int api_port() { return oma_->api_port(); }
  const std::string& admin() const { return admin_; }  // "Bearer ..."
  std::string authorized_keys() const { return dir_.file("authorized_keys"); }
  const std::string& tunnel_port_base() const { return base_str_; }
  std::string nbd_ca_cert_file() const { return dir_.file("pki/server/ca-cert.pem"); }
  // X.509: the operator's test PKI (support/x509.h: DIR/ca holds its CA key).
  std::string nbd_pki_dir() const { return dir_.file("pki"); }

  // POST /api/v1/vmas/pairing-bundles; returns the bundle.
  nlohmann::json issue_bundle(int expires_in_seconds = 3600);
  // Writes a bundle to a file and runs `vma pair` on it; returns its exit status.
  int run_pair(const nlohmann::json& bundle, const std::string& state_dir, const std::string& name,
               const std::string& vcenter, std::string* out = nullptr, std::string* err = nullptr);
  // Bundle + pair + (optionally) approve + API stand-in + tunnel started.
  std::unique_ptr<Vma> make_vma(const std::string& name, bool approve = true, bool nbd_forward = false,
                                bool start_tunnel = true);
  void approve(const std::string& vma_id);
  // POST /api/v1/vms: a VM with one disk (unit 0) assigned to `vma_id` (nullopt: none),
  // so that its export is served to that VMA's key. Returns the reply's status.
  int add_vm(const std::string& vm_id, const std::optional<std::string>& vma_id, uint64_t capacity = 1 << 20);

 private:
  mk::test::TempDir dir_{"mk-tunnel-lab"};
  // The OMA gives VMA after VMA the next tunnel port from the base: the lab holds them.
  mk::test::PortBlock tunnel_ports_{8};
  std::unique_ptr<mk::test::SshdServer> sshd_;
  std::unique_ptr<mk::oma::Oma> oma_;
  std::string admin_, base_str_;
};

// Polls `cond` every 50 ms until it holds or `deadline` passes (a hung-test guard, not
// a timing assertion). Returns the last result.
bool eventually(const std::function<bool()>& cond, std::chrono::seconds deadline = std::chrono::seconds(60));

// The tunnel's state, waiting until it is `state` (or the deadline passes).
mk::protocol::TunnelHealth wait_state(mk::vma::TunnelSupervisor& t, mk::protocol::TunnelState state,
                                      std::chrono::seconds deadline = std::chrono::seconds(60));

// Fast backoff for tests (the production defaults are 1 s .. 60 s).
void fast_backoff(mk::vma::TunnelConfig& c);

}  // namespace mk::tunnel_test
