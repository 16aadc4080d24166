// The VMA's pairing with its OMA, as `vma pair` leaves it in the state directory:
//
//   known_hosts      the OMA's pinned SSH host key (under the alias "migratekit-oma"),
//                    and each OMA node's (under "migratekit-oma-<node id>")
//   id_ed25519(.pub) the VMA's own SSH key pair (made here by ssh-keygen)
//   nbd-psk.keys     the NBD TLS PSK ("identity:hexkey"), for nbds:// to the OMA, or,
//   nbd-pki/         when the OMA serves NBD with X.509: ca-cert.pem (the CA of the
//                    OMA's NBD server), client-key.pem (made here, never sent) and
//                    client-cert.pem (signed by the OMA at enrolment; accepted once
//                    approved): the names libnbd's nbd_set_tls_certificates reads
//   api.token        the bearer token the OMA presents to this VMA's API
//   pairing.json     what is not secret: the OMA's addresses, ports, the VMA's id and
//                    its tunnel port, and with several OMA nodes the service's node list
//                    ("nodes": from the bundle, then as the nodes tell it later)
// Every file has mode 0600 and the directory 0700. Secrets are only in files, never
// on a command line or in a log.
//
// Free functions; thread-safe (callers do not write the same directory at once).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "protocol/enums.h"
#include "protocol/messages.h"
#include "vma/tunnel/tunnel_supervisor.h"

namespace mk::vma {

struct PairedState {
  std::string state_dir;
  std::string vma_id, name, vcenter;
  std::string oma_api_fingerprint;  // pinned HTTPS certificate of the OMA's API ("" = none)
  std::string oma_api_url, ssh_host, ssh_user, nbd_host, nbd_psk_identity;
  protocol::NbdTls nbd_tls = protocol::NbdTls::Psk;
  int ssh_port = 22, nbd_port = 10809, tunnel_port = 9081;
  // Several OMA nodes: the service's live nodes as last told (one tunnel to each). Empty:
  // a single OMA (ssh_host above).
  std::vector<protocol::ServiceNode> nodes;

  std::string known_hosts() const { return state_dir + "/known_hosts"; }
  std::string identity() const { return state_dir + "/id_ed25519"; }
  std::string psk_file() const { return state_dir + "/nbd-psk.keys"; }
  std::string token_file() const { return state_dir + "/api.token"; }
  // For migratekit copy --target-tls-certificates when nbd_tls is X509.
  std::string nbd_certificates_dir() const { return state_dir + "/nbd-pki"; }
};

// Reads pairing.json; throws mk::Error naming the file (and "run `vma pair`") if the
// VMA is not paired.
PairedState load_paired_state(const std::string& state_dir);

// Stores a new node list in pairing.json and pins each node's host key in known_hosts
// (the single OMA's line is kept), each file replaced atomically. Throws mk::Error.
void store_service_nodes(const std::string& state_dir, const std::vector<protocol::ServiceNode>& nodes);

// The known_hosts line pinning `host_key` ("<type> <base64> ...") under `alias`.
std::string known_hosts_line(const std::string& alias, const std::string& host_key);

// The tunnel for this pairing: OMA 127.0.0.1:<tunnel_port> -> VMA 127.0.0.1:<api_port>,
// and with nbd_local_port the NBD-over-SSH local forward to the OMA's NBD port.
TunnelConfig tunnel_config(const PairedState& s, int api_port, std::optional<int> nbd_local_port = std::nullopt);

// Where the VMA's copies reach the OMA's NBD server: 127.0.0.1:<nbd_local_port> when
// NBD travels inside the SSH connection (the tunnel's local forward), the OMA's own
// address otherwise. TLS (PSK from psk_file()) is required either way.
struct NbdTarget {
  std::string host;
  int port = 10809;
};
NbdTarget nbd_target(const PairedState& s, std::optional<int> nbd_local_port);

// The API token the VMA must require from the OMA (api.token).
std::string read_api_token(const std::string& state_dir);

}  // namespace mk::vma
