// How a VMA joins an OMA, as far as both appliances must agree: the pairing bundle the
// OMA issues and `vma pair` reads, and the enrolment call `vma pair` makes.
//
//  1. An OMA admin asks for a bundle (POST /api/v1/vmas/pairing-bundles on the OMA's
//     API): a JSON document with what a VMA needs to reach this OMA and prove itself
//     (PairingBundle). It holds secrets (the VMA API token, the NBD PSK key, the
//     one-time pairing code) and is shown once.
//     Its oma_api_url is https:// when the OMA's API speaks HTTPS, and then
//     oma_api_fingerprint pins the OMA's certificate (the VMA trusts no CA for it).
//  2. `vma pair --bundle FILE` checks the bundle (its protocol_version first: a bundle
//     of another version is refused before anything is written), writes the VMA's
//     state, and enrols:
//        POST /api/v1/vmas/enroll   Authorization: Pairing <pairing_code>
//          EnrolRequest  -> 202 EnrolReply
//     With an x509 bundle the request carries a certificate request for the key the
//     VMA made for NBD (nbd-pki/client-key.pem), and the reply the certificate the OMA
//     signed for it (CN = the VMA's id); the OMA's nbdkit accepts it from approval
//     until revocation.
//     The OMA refuses an EnrolRequest of another protocol_version with 409 naming both
//     versions, before the code is spent; an unknown, used or expired code is 403.
//     `vma pair` refuses an EnrolReply of another protocol_version.
//  3. An operator approves the VMA on the OMA; its tunnel then comes up.
//
// encode()/decode() as in messages.h: strict, FieldError naming the field. Values and
// free functions; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/json_schema.h"
#include "protocol/enums.h"
#include "protocol/messages.h"  // decode<T>(), decode_text<T>()
#include "protocol/version.h"

namespace mk::protocol {

struct PairingBundle {
  int protocol_version = kVersion;
  std::string oma_api_url;  // how the VMA reaches the OMA's API
  // SHA-256 of the OMA's HTTPS certificate ("AB:CD:..."), pinned by the VMA for
  // enrolment and every later call; nullopt: plain HTTP, or CA-verified https://.
  std::optional<std::string> oma_api_fingerprint;
  std::string ssh_host;     // the OMA's sshd (the control tunnel)
  int ssh_port = 22;
  std::string ssh_user;
  std::string ssh_host_key;  // "ssh-ed25519 AAAA...": pinned by the VMA
  std::string nbd_host;      // the OMA's NBD server
  int nbd_port = 10809;
  NbdTls nbd_tls = NbdTls::Psk;
  std::optional<std::string> nbd_psk_identity;  // psk: the VMA's own identity ("vma-...")
  std::optional<std::string> nbd_psk_key;       // psk: its key, hexadecimal (secret)
  std::optional<std::string> nbd_ca_cert;       // x509: the NBD server's CA, PEM
  std::string vma_api_token;                    // the OMA presents it to the VMA (secret)
  std::string pairing_code;                     // one-time enrolment code (secret)
  int64_t expires_at = 0;                       // the code's expiry, ms since the epoch
  // Several OMA nodes over one database (issue 18): the service's live nodes when the
  // bundle was issued, the issuing node among them; the VMA holds a tunnel to each and
  // learns later changes from POST /api/v1/service-nodes. Empty: a single OMA (ssh_host
  // and ssh_host_key above), as before nodes existed. The bundle thus names the
  // service, not one node: ssh_host and nbd_host are the issuing node's.
  std::vector<ServiceNode> nodes;
};

struct EnrolRequest {
  // The version the VMA speaks; nullopt: it sent none (a VMA older than versioned
  // protocols, which the OMA refuses with the version message, not a field error).
  std::optional<int64_t> protocol_version = kVersion;
  std::string name;            // the VMA's name (its site)
  std::string vcenter;         // the vCenter it serves
  std::string ssh_public_key;  // "ssh-ed25519 AAAA... [comment]": may hold the tunnel once approved
  // x509 bundles: a PEM certificate request for the VMA's NBD client key (made by the
  // VMA; the key never leaves it). nullopt with a PSK bundle.
  std::optional<std::string> nbd_client_csr;
};

struct EnrolReply {
  int protocol_version = kVersion;
  std::string vma_id;  // UUID the OMA gave this VMA
  std::string name, vcenter;
  std::string state;    // "pending": waiting for an operator's approval
  int tunnel_port = 0;  // the OMA's loopback port of this VMA's reverse tunnel
  std::string next;     // what the operator does next
  // x509: the VMA's NBD client certificate (PEM), signed by the OMA's client CA for the
  // request it sent; it verifies once the VMA is approved. nullopt with PSK.
  std::optional<std::string> nbd_client_cert;
};

nlohmann::json encode(const PairingBundle& m);
nlohmann::json encode(const EnrolRequest& m);
nlohmann::json encode(const EnrolReply& m);
void decode(const nlohmann::json& j, PairingBundle& out);
void decode(const nlohmann::json& j, EnrolRequest& out);
void decode(const nlohmann::json& j, EnrolReply& out);

// "ssh-ed25519 <68 base64 characters>" from an ed25519 public key line (comment
// dropped); throws schema::FieldError(field) for anything else (other key types, line
// breaks, quotes, commas or backslashes, which could smuggle authorized_keys options).
std::string normalize_ed25519_public_key(const std::string& line, const std::string& field = "ssh_public_key");

namespace schemas {  // built on first use, as in messages.h
const schema::Schema& pairing_bundle();
const schema::Schema& enrol_request();
const schema::Schema& enrol_reply();
}  // namespace schemas

}  // namespace mk::protocol
