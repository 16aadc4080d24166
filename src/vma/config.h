// VmaConfig: everything `vma run` is configured with. Secrets (vCenter password, API
// token, NBD PSK) are named by file, never given as values.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "protocol/messages.h"
#include "vsphere/session.h"

namespace mk::vma {

struct VmaConfig {
  std::string state_dir;                 // required: jobs/, work/, checkpoints/, api.port
  std::string vcenter_url;               // https://vcenter.example/sdk
  std::string vcenter_user;
  std::string vcenter_password_file;
  std::string vcenter_thumbprint;        // pin the certificate's SHA-1 (else the CA is verified)
  std::string vcenter_ca_file;           // CA bundle for the certificate ("" = the system's)
  std::string listen_address = "127.0.0.1";
  int listen_port = 8081;                // 0: any free port, written to STATE/api.port
  std::string token_file;                // default STATE/api.token
  std::string nbd_psk_file;              // default STATE/nbd-psk.keys
  // X.509 OMAs: ca-cert.pem, client-cert.pem, client-key.pem; default STATE/nbd-pki
  // (what `vma pair` writes). A VMA needs the PSK or these, whichever its OMA uses.
  std::string nbd_certificates_dir;
  int max_disks_per_vm = 4;
  int max_vms = 4;
  // NBD connections per disk copy, when the OMA's export and the disk's reader both allow
  // multi-conn (one otherwise). Through SSH each is its own channel, with its own window.
  // 0 (not set by the operator): by mode, nbd_connections_for() below.
  int nbd_connections = 0;
  std::string snapshot_prefix = "migratekit-";
  std::string vddk_libdir = "/opt/vmware-vix-disklib-distrib";
  std::string vddk_transports = "nbdssl:nbd";
  uint64_t read_rate = 0;                // bytes/s per disk reader; 0 = unlimited
  // A disk whose target (the OMA's NBD export) went away resumes from its checkpoint when
  // it is back, and fails once it has been away this long (RunnerOptions).
  int target_outage_timeout_s = 300;
  std::map<std::string, std::string> flat_datastores;  // datastore -> directory (no VDDK)
  // NBD inside the SSH connection: every copy goes to 127.0.0.1:<nbd_via_port> (the
  // tunnel's local forward to the OMA's NBD server) instead of the address in the
  // OMA's request. 0 = direct.
  int nbd_via_port = 0;
  // NBD inside SSH with several OMA nodes (one tunnel each): the local port of the tunnel
  // that reaches the NBD server a replicate request names (TunnelSet::nbd_local_port);
  // overrides nbd_via_port when set. Throws when no tunnel reaches it.
  std::function<int(const protocol::NbdTarget&)> nbd_via;
};

// The NBD connections per disk when the operator did not choose (bench/vma_pass figures
// in src/vma/README.md): through the SSH forward one ssh channel's window limits one
// connection, and a second channel cut a quiet machine's pass by 19 %; 4 and 8 were
// slower than 1 on a loaded one (more TLS sessions and workers on the same cores).
// Direct TLS gains nothing from more.
inline constexpr int kNbdConnectionsThroughSsh = 2;
inline constexpr int kNbdConnectionsDirect = 1;

// Whether `config`'s copies go through the SSH forward (--nbd-over-ssh) rather than
// straight to the OMA's NBD server.
inline bool nbd_through_ssh(const VmaConfig& config) {
  return config.nbd_via_port != 0 || static_cast<bool>(config.nbd_via);
}

// The connections per disk `config` copies with: the operator's --nbd-connections, else
// the default of its mode.
inline int nbd_connections_for(const VmaConfig& config) {
  if (config.nbd_connections > 0) return config.nbd_connections;
  return nbd_through_ssh(config) ? kNbdConnectionsThroughSsh : kNbdConnectionsDirect;
}

}  // namespace mk::vma
