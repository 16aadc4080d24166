#include "protocol/enrolment.h"

#include <fmt/format.h>

#include <cctype>
#include <set>
#include <sstream>

#include "protocol/codec.h"
#include "protocol/names.h"

namespace mk::protocol {

using nlohmann::json;
using schema::Field;
using schema::FieldError;
using schema::Schema;
using Type = Field::Type;
using codec::checked;
using codec::host_check;
using codec::opt;
using codec::opt_of;
using codec::uuid_check;

namespace {

constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

void url_check(const std::string& v, const std::string& path) {
  if (!v.starts_with("http://") && !v.starts_with("https://")) throw FieldError(path, "expected an http(s):// URL");
  if (v.find(' ') != std::string::npos) throw FieldError(path, "must not contain spaces");
}
void user_check(const std::string& v, const std::string& path) {
  if (v.empty() || v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_.-") != std::string::npos || v[0] == '-')
    throw FieldError(path, "expected a user name (lowercase letters, digits, _ . -)");
}
// A host key as known_hosts holds it: "<type> <base64> [comment]".
void host_key_check(const std::string& v, const std::string& path) {
  std::istringstream in(v);
  std::string type, blob;
  in >> type >> blob;
  if ((!type.starts_with("ssh-") && !type.starts_with("ecdsa-")) || blob.empty() ||
      blob.find_first_not_of(kBase64) != std::string::npos)
    throw FieldError(path, "expected an SSH public key line (\"ssh-ed25519 AAAA...\")");
}
void token_check(const std::string& v, const std::string& path) {
  if (v.size() < 16 ||
      v.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
    throw FieldError(path, "expected a token of at least 16 letters, digits, _ or -");
}
void psk_identity_check(const std::string& v, const std::string& path) {
  if (v.empty() || v.find_first_of(": ") != std::string::npos)
    throw FieldError(path, "expected a PSK identity (no ':')");
}
void hex_check(const std::string& v, const std::string& path) {
  if (v.size() < 32 || v.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    throw FieldError(path, "expected a hexadecimal key of at least 32 digits");
}
void pem_check(const std::string& v, const std::string& path) {
  if (v.find("-----BEGIN CERTIFICATE-----") == std::string::npos) throw FieldError(path, "expected a PEM certificate");
}
void csr_check(const std::string& v, const std::string& path) {
  if (v.find("-----BEGIN CERTIFICATE REQUEST-----") == std::string::npos)
    throw FieldError(path, "expected a PEM certificate request");
}
// "AB:CD:..." as the OMA writes it: 32 bytes, uppercase hex, colons between.
void fingerprint_check(const std::string& v, const std::string& path) {
  bool ok = v.size() == 95;
  for (size_t i = 0; ok && i < v.size(); ++i)
    ok = i % 3 == 2 ? v[i] == ':' : (std::isdigit(static_cast<unsigned char>(v[i])) || (v[i] >= 'A' && v[i] <= 'F'));
  if (!ok) throw FieldError(path, "expected a SHA-256 certificate fingerprint (\"AB:CD:...\", 32 bytes)");
}
void display_name_check(const std::string& v, const std::string& path) { check_display_name(v, path); }
void ssh_public_key_check(const std::string& v, const std::string& path) { normalize_ed25519_public_key(v, path); }

Field version_field() {
  return {.name = "protocol_version",
          .type = Type::Integer,
          .description = "the OMA<->VMA protocol the sender speaks; both sides must speak the same",
          .min = 0,
          .max = 1000000,
          .example = kVersion};
}
Field optional_version_field() {
  Field f = version_field();
  f.required = false;
  f.description += "; absent from VMAs older than versioned protocols, which the OMA refuses";
  return f;
}

Field port_field(std::string name, std::string description, int example) {
  return {.name = std::move(name),
          .type = Type::Integer,
          .description = std::move(description),
          .min = 1,
          .max = 65535,
          .example = example};
}

// The TLS fields agree with nbd_tls: a PSK bundle carries identity and key and no CA,
// an X.509 bundle the CA and no PSK.
void check_bundle(const json& j) {
  std::set<std::string> ids;
  for (size_t i = 0; i < j["nodes"].size(); ++i)
    if (!ids.insert(j["nodes"][i]["node_id"].get<std::string>()).second)
      throw FieldError(fmt::format("nodes[{}].node_id", i), "appears twice");
  bool psk = j["nbd_tls"] == enum_name(NbdTls::Psk);
  for (const char* f : {"nbd_psk_identity", "nbd_psk_key"}) {
    if (psk == j[f].is_null()) {
      throw FieldError(f, psk ? "is required when nbd_tls is \"psk\"" : "must be null when nbd_tls is \"x509\"");
    }
  }
  if (psk != j["nbd_ca_cert"].is_null()) {
    throw FieldError("nbd_ca_cert",
                     psk ? "must be null when nbd_tls is \"psk\"" : "is required when nbd_tls is \"x509\"");
  }
  if (!j["oma_api_fingerprint"].is_null() && !j["oma_api_url"].get<std::string>().starts_with("https://"))
    throw FieldError("oma_api_fingerprint", "must be null when oma_api_url is not https://");
}

}  // namespace

namespace schemas {

const Schema& pairing_bundle() {
  static const Schema s{
      {
          version_field(),
          {.name = "oma_api_url",
           .description = "how the VMA reaches the OMA's API",
           .max_length = 2048,
           .check = url_check,
           .example = "https://oma.example.local:8082"},
          {.name = "oma_api_fingerprint",
           .description = "SHA-256 fingerprint of the OMA's HTTPS certificate, pinned by the VMA (null: plain "
                          "HTTP, or a certificate the VMA verifies with its CAs)",
           .max_length = 95,
           .check = fingerprint_check,
           .nullable = true,
           .example = "3A:5F:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD"},
          {.name = "ssh_host",
           .description = "the OMA's sshd, for the control tunnel",
           .max_length = 253,
           .check = host_check,
           .example = "oma.example.local",
           .pattern = kHostPattern},
          port_field("ssh_port", "the OMA's SSH port", 22),
          {.name = "ssh_user",
           .description = "the SSH user VMAs log in as",
           .max_length = 32,
           .check = user_check,
           .example = "migratekit"},
          {.name = "ssh_host_key",
           .description = "the OMA's SSH public host key, pinned by the VMA",
           .max_length = 8192,
           .check = host_key_check,
           .example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3i1Xg0cO2zV9yv6mJ0d8m1Q3m6p5K1n2Y3r4s5t6u root@oma"},
          {.name = "nbd_host",
           .description = "the OMA's NBD server (disk data, NBD over TLS)",
           .max_length = 253,
           .check = host_check,
           .example = "oma.example.local",
           .pattern = kHostPattern},
          port_field("nbd_port", "the NBD port", 10809),
          {.name = "nbd_tls",
           .description = "psk: a pre-shared key; x509: certificates",
           .max_length = 8,
           .one_of = enum_names<NbdTls>()},
          {.name = "nbd_psk_identity",
           .description = "psk: the VMA's own NBD identity",
           .max_length = 64,
           .check = psk_identity_check,
           .nullable = true,
           .example = "vma-0123456789abcdef"},
          {.name = "nbd_psk_key",
           .description = "psk: the VMA's NBD key in hex (secret)",
           .max_length = 256,
           .check = hex_check,
           .nullable = true,
           .example = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
          {.name = "nbd_ca_cert",
           .description = "x509: the NBD server's CA certificate (PEM)",
           .max_length = 65536,
           .check = pem_check,
           .nullable = true,
           .example = nullptr,
           .multiline = true},
          {.name = "vma_api_token",
           .description = "the token the OMA presents to the VMA's API (secret)",
           .max_length = 255,
           .check = token_check,
           .example = "mko_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
          {.name = "pairing_code",
           .description = "the one-time code the VMA enrols with (secret)",
           .max_length = 255,
           .check = token_check,
           .example = "mkp_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
          {.name = "expires_at",
           .type = Type::Integer,
           .description = "when the code expires (milliseconds since the Unix epoch)",
           .min = 0,
           .example = int64_t{1764673200000}},
          {.name = "nodes",
           .type = Type::Array,
           .description = "several OMA nodes: the service's live nodes, each with its sshd and pinned host key (the "
                          "VMA holds a tunnel to each); empty for a single OMA",
           .max_length = kMaxServiceNodes,
           .items = &service_node()},
      },
      "PairingBundle",
      "what a VMA needs to pair with this OMA (secrets: shown once)"};
  return s;
}

const Schema& enrol_request() {
  static const Schema s{
      {
          optional_version_field(),
          {.name = "name", .description = "the VMA's name (its site)", .check = display_name_check, .example = "site-a"},
          {.name = "vcenter",
           .description = "the vCenter it serves",
           .check = display_name_check,
           .example = "vcenter.example.local"},
          {.name = "ssh_public_key",
           .description = "the VMA's ssh-ed25519 public key",
           .max_length = 512,
           .check = ssh_public_key_check,
           .example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3i1Xg0cO2zV9yv6mJ0d8m1Q3m6p5K1n2Y3r4s5t6u vma-site-a"},
          {.name = "nbd_client_csr",
           .required = false,
           .description = "x509 bundles: a PEM certificate request for the VMA's NBD client key (the key stays on "
                          "the VMA); the OMA signs it. Absent or null with a PSK bundle",
           .max_length = 16384,
           .check = csr_check,
           .nullable = true,
           .example = nullptr,
           .multiline = true},
      },
      "EnrolRequest",
      "a VMA's enrolment (Authorization: Pairing CODE)"};
  return s;
}

const Schema& enrol_reply() {
  static const Schema s{
      {
          version_field(),
          {.name = "vma_id",
           .description = "the id the OMA gave the VMA",
           .max_length = 36,
           .check = uuid_check,
           .example = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d",
           .pattern = kUuidPattern},
          {.name = "name", .description = "its name (site)", .check = display_name_check, .example = "site-a"},
          {.name = "vcenter",
           .description = "the vCenter it serves",
           .check = display_name_check,
           .example = "vcenter.example.local"},
          {.name = "state",
           .description = "pending until an operator approves the VMA",
           .max_length = 16,
           .one_of = {"pending"}},
          port_field("tunnel_port", "the OMA's loopback port its tunnel forwards to its API", 9081),
          {.name = "next",
           .description = "what the operator does next",
           .max_length = 1024,
           .example = "an operator approves it: POST /api/v1/vmas/4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d/approve"},
          {.name = "nbd_client_cert",
           .description = "x509: the VMA's NBD client certificate (PEM, CN = its id), signed by the OMA's client CA; "
                          "accepted by the OMA's NBD server from approval until revocation. null with PSK",
           .max_length = 16384,
           .check = pem_check,
           .nullable = true,
           .example = nullptr,
           .multiline = true},
      },
      "EnrolReply",
      "the VMA is enrolled and waits for an operator's approval"};
  return s;
}

}  // namespace schemas

std::string normalize_ed25519_public_key(const std::string& line, const std::string& field) {
  if (line.find_first_of("\r\n\"\\,") != std::string::npos)
    throw FieldError(field, "must be a single line without quotes, commas or backslashes");
  std::istringstream in(line);
  std::string type, blob;
  in >> type >> blob;
  if (type != "ssh-ed25519")
    throw FieldError(field, "must be an ed25519 key (\"ssh-ed25519 AAAA...\", as `vma pair` makes)");
  // An ed25519 public key blob is 51 bytes: 68 base64 characters starting "AAAAC3NzaC1lZDI1NTE5".
  if (blob.size() != 68 || !blob.starts_with("AAAAC3NzaC1lZDI1NTE5") ||
      blob.find_first_not_of(kBase64) != std::string::npos)
    throw FieldError(field, "is not a valid ssh-ed25519 public key");
  return type + " " + blob;
}

json encode(const PairingBundle& m) {
  json j = {{"protocol_version", m.protocol_version},
            {"oma_api_url", m.oma_api_url},
            {"oma_api_fingerprint", opt(m.oma_api_fingerprint)},
            {"ssh_host", m.ssh_host},
            {"ssh_port", m.ssh_port},
            {"ssh_user", m.ssh_user},
            {"ssh_host_key", m.ssh_host_key},
            {"nbd_host", m.nbd_host},
            {"nbd_port", m.nbd_port},
            {"nbd_tls", enum_name(m.nbd_tls)},
            {"nbd_psk_identity", opt(m.nbd_psk_identity)},
            {"nbd_psk_key", opt(m.nbd_psk_key)},
            {"nbd_ca_cert", opt(m.nbd_ca_cert)},
            {"vma_api_token", m.vma_api_token},
            {"pairing_code", m.pairing_code},
            {"expires_at", m.expires_at},
            {"nodes", json::array()}};
  for (const auto& n : m.nodes) j["nodes"].push_back(encode(n));
  return checked(std::move(j), schemas::pairing_bundle(), check_bundle);
}

void decode(const json& j, PairingBundle& out) {
  checked(j, schemas::pairing_bundle(), check_bundle);
  out.protocol_version = j["protocol_version"].get<int>();
  out.oma_api_url = j["oma_api_url"];
  out.oma_api_fingerprint = opt_of(j, "oma_api_fingerprint");
  out.ssh_host = j["ssh_host"];
  out.ssh_port = j["ssh_port"].get<int>();
  out.ssh_user = j["ssh_user"];
  out.ssh_host_key = j["ssh_host_key"];
  out.nbd_host = j["nbd_host"];
  out.nbd_port = j["nbd_port"].get<int>();
  out.nbd_tls = parse_field<NbdTls>(j["nbd_tls"].get<std::string>(), "nbd_tls");
  out.nbd_psk_identity = opt_of(j, "nbd_psk_identity");
  out.nbd_psk_key = opt_of(j, "nbd_psk_key");
  out.nbd_ca_cert = opt_of(j, "nbd_ca_cert");
  out.vma_api_token = j["vma_api_token"];
  out.pairing_code = j["pairing_code"];
  out.expires_at = j["expires_at"].get<int64_t>();
  out.nodes.clear();
  for (const auto& n : j["nodes"]) out.nodes.push_back(decode<ServiceNode>(n));
}

json encode(const EnrolRequest& m) {
  json j = {{"name", m.name},
            {"vcenter", m.vcenter},
            {"ssh_public_key", m.ssh_public_key},
            {"nbd_client_csr", opt(m.nbd_client_csr)}};
  if (m.protocol_version) j["protocol_version"] = *m.protocol_version;
  return checked(std::move(j), schemas::enrol_request());
}

void decode(const json& j, EnrolRequest& out) {
  checked(j, schemas::enrol_request());
  out = {std::nullopt, j["name"], j["vcenter"], j["ssh_public_key"],
         j.contains("nbd_client_csr") ? opt_of(j, "nbd_client_csr") : std::nullopt};
  if (j.contains("protocol_version")) out.protocol_version = j["protocol_version"].get<int64_t>();
}

json encode(const EnrolReply& m) {
  return checked({{"protocol_version", m.protocol_version},
                  {"vma_id", m.vma_id},
                  {"name", m.name},
                  {"vcenter", m.vcenter},
                  {"state", m.state},
                  {"tunnel_port", m.tunnel_port},
                  {"next", m.next},
                  {"nbd_client_cert", opt(m.nbd_client_cert)}},
                 schemas::enrol_reply());
}

void decode(const json& j, EnrolReply& out) {
  checked(j, schemas::enrol_reply());
  out = {j["protocol_version"].get<int>(), j["vma_id"], j["name"], j["vcenter"], j["state"],
         j["tunnel_port"].get<int>(),      j["next"],   opt_of(j, "nbd_client_cert")};
}

}  // namespace mk::protocol
