// VmaIsolatedExports: the nbdkit export backend, where each VMA can list and open only
// the exports of the VMs assigned to it — enforced by keys, on one port.
//
//   client ──TCP :10809──► migratekit-nbd-router ──► ISO/sockets/IDENTITY.sock ──► that VMA's nbdkit
//                          (reads the PSK identity                                  (PSK file: its key only;
//                           from the TLS ClientHello)                                exports: its VMs only)
//
// In X.509 mode (config.tls.certificates_dir: NbdClientCa's directory) the same servers
// and sockets, but the router ends TLS with that directory (nbd_router.h) and routes by
// the verified client certificate's CN: IDENTITY is the VMA's id (its certificate's CN)
// and "oma" for the OMA's own certificate; every nbdkit speaks plain NBD on its socket
// (no PSK files), the directory being 0700. VmaNbdAccess.psk_line is then empty.
//
// Processes (each an NbdkitExportServer: supervised, restarted, kept and adopted across
// OMA restarts with keep_running, like the single nbdkit before):
//  * the router on the NBD port (see nbd_router.h), recorded in config.record_path;
//  * the OMA's own nbdkit on ISO/sockets/.oma.sock (a name the router never routes to)
//    with the OMA's PSK file (X.509: no TLS; its own identity "oma" and operators' lines) serving every
//    export of EXPORTS_DIR, as the single server did: the OMA verifies exports with it
//    and a default VMA (--vma-url) holding the OMA's key copies with it. For each identity
//    in that file, ISO/sockets/IDENTITY.sock is a symlink to .oma.sock;
//  * one nbdkit per approved VMA on ISO/sockets/IDENTITY.sock (its PSK identity, "vma-…"),
//    with ISO/vma/IDENTITY/psk.keys (0600, that VMA's line only) and ISO/vma/IDENTITY/exports,
//    holding a symlink EXPORT -> EXPORTS_DIR/EXPORT for each export of a VM assigned to
//    that VMA (so a repointed export is repointed for its VMA too, and an unpublished one
//    is gone for it). Kept records in kept_servers_dir(record_path)/IDENTITY.json.
// All of them share the written-bytes directory: the filter counts per export, under a
// file lock, whichever server the bytes came through.
//
// ISO (DATA/nbd-isolation) and ISO/sockets are mode 0700: only the OMA's user can reach
// a VMA's nbdkit without the router.
//
// set_vma_access() (from PairingService, at start and after every approval or
// revocation) makes the set of per-VMA servers exactly the approved VMAs: it starts an
// approved VMA's server (adopting a kept one) and terminates a revoked VMA's at once, so
// its open NBD sessions end; no other VMA's server is touched. cut_off() restarts only
// the servers that serve the cut-off exports (the OMA's own and the owning VMA's).
//
// Owns its servers. Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "oma/exports/export_backend.h"
#include "oma/exports/nbdkit_server.h"

namespace mk::oma {

// An approved VMA's NBD credentials: its id and its PSK file line "identity:hexkey"
// (X.509: empty; the identity is the VMA id, the CN of the certificate the OMA issued).
struct VmaNbdAccess {
  std::string vma_id;
  std::string psk_line;
};

class VmaIsolatedExports : public ExportBackend {
 public:
  // `config`: the NBD port (listen_address, port), the OMA's PSK file (tls.psk_file),
  // EXPORTS_DIR, the written-bytes directory and filter, keep_running, record_path
  // (the router's record) and log_path (the router's log; the servers' logs go beside
  // their sockets' directories). `isolation_dir`: ISO above. `vma_of_vm`: the id of the
  // VMA a VM is assigned to, nullopt for none (the repository's vm_vma).
  VmaIsolatedExports(ExportServerConfig config, std::string isolation_dir,
                     std::function<std::optional<std::string>(const std::string& vm_id)> vma_of_vm);
  ~VmaIsolatedExports() override;

  std::string name() const override { return "nbdkit"; }
  void start() override;
  void stop() override;
  void publish(const std::string& export_name, const std::string& device_path) override;
  void unpublish(const std::string& export_name) override;
  void cut_off(const std::vector<std::string>& export_names) override;
  // Through the router with the OMA's own key (the OMA's nbdkit).
  Endpoint endpoint(const std::string& export_name) const override;
  pid_t server_pid() const override;  // the router's: the process on the NBD port
  int port() const override;
  int restarts() const override;
  std::optional<uint64_t> written_bytes(const std::string& export_name) const override;

  // Makes the per-VMA servers exactly `approved` (see above). Throws mk::Error naming
  // the VMA whose server cannot start (the others are still set up) or UsageError for
  // an identity that is not a plain name.
  void set_vma_access(const std::vector<VmaNbdAccess>& approved);

  // For tests and the health view: the PID of a VMA's server (by VMA id), -1 if none.
  pid_t vma_server_pid(const std::string& vma_id) const;
  bool adopted() const;  // the router was adopted from an earlier OMA
  std::string sockets_dir() const { return sockets_dir_; }

 private:
  struct VmaServer {
    std::string identity;
    std::string dir;  // ISO/vma/IDENTITY
    std::unique_ptr<NbdkitExportServer> server;
  };
  void link_exports(const std::string& vma_id, VmaServer& s);  // requires mu_
  void sync_main_identities();
  std::string identity(const VmaNbdAccess& a) const;  // its socket's name
  std::optional<std::string> owner_of(const std::string& export_name) const;

  ExportServerConfig config_;
  bool x509_ = false;  // config_.tls is an X.509 certificates directory (the router ends TLS)
  std::string isolation_dir_, sockets_dir_;
  std::function<std::optional<std::string>(const std::string&)> vma_of_vm_;
  std::unique_ptr<NbdkitExportServer> router_;
  std::unique_ptr<NbdkitExportServer> main_;
  mutable std::mutex mu_;                  // guards vmas_
  std::map<std::string, VmaServer> vmas_;  // by VMA id
};

}  // namespace mk::oma
