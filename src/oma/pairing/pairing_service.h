// PairingService: how VMAs join and leave this OMA.
//
//  1. An admin asks for a pairing bundle: a JSON document carrying what a VMA needs to
//     reach this OMA and prove itself: the OMA's API URL, its SSH endpoint and public
//     host key (to pin), the NBD server and its TLS PSK identity and key (or, for an
//     OMA serving NBD with X.509, its CA certificate), a fresh API
//     token the OMA will present to the VMA, and a one-time pairing code (stored only
//     as its SHA-256, expiring after code_ttl).
//  2. The VMA enrols (`vma pair`) with the code, its name, vCenter and SSH public key:
//     the code is used up, the VMA is recorded as pending with its own tunnel port
//     (tunnel_port_base for the first, then the next ones).
//  3. An operator approves it: its key goes into the OMA-managed authorized_keys file,
//     allowed to hold that one reverse forward (and a local forward to the NBD port),
//     and its own NBD PSK identity (each bundle makes one, "vma-…") goes to its own
//     nbdkit behind the NBD router (set_nbd_access; VmaIsolatedExports), which serves
//     only the exports of that VMA's VMs (with the nbd-server backend, into the one PSK
//     file of the server instead: no isolation there).
//     With X.509 instead (nbd_client_ca set), the VMA sends a certificate request at
//     enrolment and gets back its own client certificate from the OMA's client CA
//     (NbdClientCa); the CA's revocation list names every certificate whose VMA is not
//     approved, and the approved VMAs (by id, the CN of their certificates) get their
//     own nbdkit behind the NBD router the same way (set_nbd_access with empty PSK
//     lines), which ends TLS and routes by the verified certificate's CN.
//  With several OMA nodes (issue 18) bundles carry the service's live nodes (each its
//  sshd and pinned host key: the VMA holds a tunnel to each), and every node follows
//  the database on its own (VmaNodeSync, vma_node_sync.h): its authorized_keys, its NBD
//  access, the sessions of VMAs revoked on another node, and the node list it tells VMAs.
//  4. Revocation removes both and ends the VMA's live SSH session: a revoked VMA can
//     neither hold the tunnel nor open a new NBD connection; its nbdkit is stopped, so
//     its open NBD sessions end at once, and no other VMA's server is touched (X.509:
//     its certificate is also on the revocation list the router reads).
// In the PSK file the OMA owns only the "vma-" lines; other lines (its own identity,
// an operator's) are kept as they are.
//
// The VMA API tokens are stored sealed with the OMA's SecretBox. The database is the
// source of truth; the authorized_keys file is regenerated from it at start and after
// every change. Does not own its collaborators. Thread-safe (file writes serialised).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>
#include <string>

#include "oma/crypto.h"
#include "oma/db/vm_repository.h"
#include "oma/db/vma_repository.h"
#include "oma/exports/vma_isolated_exports.h"
#include "oma/pairing/nbd_client_ca.h"
#include "oma/pairing/ssh_sessions.h"
#include "oma/vma/vma_client.h"
#include "protocol/enrolment.h"

namespace mk::oma {

struct PairingConfig {
  std::string api_url;               // how a VMA reaches this OMA's API
  std::optional<std::string> api_fingerprint;  // its HTTPS certificate's, for https:// URLs
  std::string ssh_host;              // how a VMA reaches this OMA's sshd
  int ssh_port = 22;                 // 22 or 443
  std::string ssh_user = "migratekit";
  std::string ssh_host_key_file = "/etc/ssh/ssh_host_ed25519_key.pub";  // public key to pin
  std::string authorized_keys_file;  // OMA-managed; sshd's AuthorizedKeysFile for ssh_user
  int tunnel_port_base = 9081;
  std::string tunnel_session_helper;  // its Unix socket (tunnel_session_helper.h); "": end sessions directly
  std::string nbd_host;
  int nbd_port = 10809;              // the export server's (authorized_keys' permitopen)
  int nbd_advertise_port = 0;        // what bundles name (NAT, port forwards); 0: nbd_port
  std::string nbd_psk_file;          // "identity:hexkey"; empty: X.509 (below)
  std::string nbd_certificates_dir;  // X.509 instead: the bundle carries its ca-cert.pem
  // X.509: the OMA's client CA (not owned; null with PSK) and how to make the NBD server
  // read its certificates directory again (null: a server that does not verify clients).
  NbdClientCa* nbd_client_ca = nullptr;
  std::function<void(const std::string& why)> reload_nbd_server;
  // Per-VMA NBD servers (VmaIsolatedExports::set_vma_access): with PSK the approved VMAs'
  // keys go to their own servers, not into nbd_psk_file; with X.509 their ids (empty PSK
  // lines). Null: every approved VMA's key goes into nbd_psk_file (the nbd-server
  // backend, which cannot isolate VMAs).
  std::function<void(const std::vector<VmaNbdAccess>&)> set_nbd_access;
  // Where this node's sshd takes VMAs' reverse forwards: 127.0.0.1, or another loopback
  // address where several OMA nodes share one machine (tests, labs).
  std::string tunnel_address = "127.0.0.1";
  // Several OMA nodes (issue 18): the service's live nodes as the registry says now,
  // which bundles carry (null: a single OMA; bundles name it alone, as before).
  std::function<std::vector<protocol::ServiceNode>()> service_nodes;
  std::chrono::seconds code_ttl{24 * 3600};
  std::chrono::milliseconds vma_timeout{10000};
};

class PairingService {
 public:
  PairingService(VmaRepository& vmas, VmRepository& vms, SecretBox& secrets, PairingConfig config);

  // Rewrites, from the database, the authorized_keys file and the approved VMAs' lines
  // of the NBD PSK file (at start and after every approval or revocation).
  void sync_access();

  // A new bundle (see above; the protocol's PairingBundle). ttl: nullopt = config's code_ttl.
  nlohmann::json issue_bundle(std::optional<std::chrono::seconds> ttl = std::nullopt);
  // An enrolled VMA and, in X.509 mode, its NBD client certificate (PEM).
  struct Enrolment {
    VmaRecord vma;
    std::optional<std::string> nbd_client_cert;
  };
  // Throws Conflict (unknown, used or expired code) or UsageError (bad key; in X.509
  // mode a missing or bad certificate request, refused before the code is used).
  Enrolment enroll(const std::string& pairing_code, const std::string& name, const std::string& vcenter,
                   const std::string& ssh_public_key, const std::optional<std::string>& nbd_client_csr = std::nullopt);
  VmaRecord approve(const std::string& vma_id);
  // What became of its live sshd session (ended directly, or by the tunnel-session helper).
  TunnelSessionEnd revoke(const std::string& vma_id);
  // Ends the VMA's live sshd session on this node (a revocation another node made).
  TunnelSessionEnd end_session(const VmaRecord& vma);
  // The service's live nodes (empty for a single OMA).
  std::vector<protocol::ServiceNode> service_nodes() const;

  // The VMA's health through its tunnel, and the tunnel as the OMA sees it.
  nlohmann::json health(const std::string& vma_id);
  // "up" when something answers on the VMA's tunnel port (at this node's tunnel
  // address), else "down".
  std::string tunnel_state(const VmaRecord& vma);

  // A client for this VMA: http://<tunnel address>:<tunnel port> with its token.
  std::unique_ptr<VmaClient> client(const VmaRecord& vma);
  // The client of the VMA that owns `vm_id` (the one that discovered it); nullptr when
  // the VM has no VMA recorded (the default VMA, --vma-url). Throws VmaUnreachable if
  // its VMA is pending or revoked.
  std::shared_ptr<VmaClient> client_for_vm(const std::string& vm_id);
  const PairingConfig& config() const { return config_; }
  // The API URL bundles carry and, when it is this OMA's HTTPS listener, the
  // certificate's fingerprint VMAs pin.
  void set_api_url(const std::string& url, std::optional<std::string> fingerprint = std::nullopt);

 private:
  void add_nbd_tls(protocol::PairingBundle& bundle) const;
  void sync_nbd_psk_file();
  void sync_nbd_client_certificates(const std::string& why);  // requires file_mutex_

  VmaRepository& vmas_;
  VmRepository& vms_;  // which VMA serves a VM
  SecretBox& secrets_;
  PairingConfig config_;
  std::mutex file_mutex_;  // also guards config_.api_url
};

nlohmann::json vma_json(const VmaRecord& v);

// The ids of the approved VMAs (whose NBD client certificates may connect).
std::set<std::string> approved_vma_ids(VmaRepository& vmas);

}  // namespace mk::oma
