#include "oma/pairing/pairing_service.h"

#include <fmt/format.h>

#include <fstream>
#include <sstream>

#include "oma/db/sealed_values.h"
#include "common/files.h"
#include "common/log.h"
#include "oma/errors.h"
#include "oma/names.h"
#include "oma/pairing/authorized_keys.h"
#include "oma/pairing/ssh_sessions.h"
#include "oma/pairing/tunnel_session_helper.h"

namespace mk::oma {
namespace {

std::string first_line(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line) || line.empty())
    throw Error(fmt::format("cannot read {} from {}: check the OMA's configuration", what, path));
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

}  // namespace

nlohmann::json vma_json(const VmaRecord& v) {
  auto opt = [](const std::optional<int64_t>& n) { return n ? nlohmann::json(*n) : nlohmann::json(nullptr); };
  return {{"vma_id", v.vma_id},           {"name", v.name},
          {"vcenter", v.vcenter},         {"state", v.state},
          {"tunnel_port", v.tunnel_port}, {"ssh_public_key", v.ssh_public_key},
          {"created_at", v.created_at},   {"approved_at", opt(v.approved_at)},
          {"revoked_at", opt(v.revoked_at)}};
}

std::set<std::string> approved_vma_ids(VmaRepository& vmas) {
  std::set<std::string> ids;
  for (const auto& v : vmas.list_vmas())
    if (v.state == VmaState::Approved) ids.insert(v.vma_id);
  return ids;
}

PairingService::PairingService(VmaRepository& vmas, VmRepository& vms, SecretBox& secrets, PairingConfig config)
    : vmas_(vmas), vms_(vms), secrets_(secrets), config_(std::move(config)) {
  if (config_.authorized_keys_file.empty()) throw UsageError("pairing: an authorized_keys file path is required");
  if (config_.tunnel_port_base < 1 || config_.tunnel_port_base > 65000)
    throw UsageError("--tunnel-port-base must be between 1 and 65000");
}

void PairingService::set_api_url(const std::string& url, std::optional<std::string> fingerprint) {
  std::lock_guard lk(file_mutex_);
  config_.api_url = url;
  config_.api_fingerprint = std::move(fingerprint);
}

void PairingService::sync_access() {
  std::lock_guard lk(file_mutex_);
  write_authorized_keys(config_.authorized_keys_file, vmas_.list_vmas(), config_.nbd_port, config_.ssh_user,
                        config_.tunnel_address);
  sync_nbd_psk_file();
  sync_nbd_client_certificates("the VMAs' access changed");
}

void PairingService::sync_nbd_client_certificates(const std::string& why) {
  if (!config_.nbd_client_ca) return;
  auto approved = approved_vma_ids(vmas_);
  // The revocation list first (the router refuses a revoked certificate from its next
  // handshake), then the servers: a revoked VMA's nbdkit ends with its open sessions.
  if (config_.nbd_client_ca->sync(approved) && config_.reload_nbd_server) config_.reload_nbd_server(why);
  if (config_.set_nbd_access) {
    std::vector<VmaNbdAccess> access;
    for (const auto& id : approved) access.push_back({id, ""});
    config_.set_nbd_access(access);
  }
}

// This VMA's own NBD PSK identity and key (authorised in the server's file at approval),
// or, for an NBD server with X.509, its CA certificate.
void PairingService::add_nbd_tls(protocol::PairingBundle& b) const {
  if (config_.nbd_psk_file.empty()) {
    std::string path = config_.nbd_certificates_dir + "/ca-cert.pem";
    std::ifstream in(path);
    std::stringstream pem;
    pem << in.rdbuf();
    if (!in || pem.str().find("BEGIN CERTIFICATE") == std::string::npos)
      throw Error(fmt::format("cannot read the NBD TLS CA certificate {} for the pairing bundle", path));
    b.nbd_tls = protocol::NbdTls::X509;
    b.nbd_ca_cert = pem.str();
    return;
  }
  first_line(config_.nbd_psk_file, "the NBD TLS PSK");  // the server's file must be there
  b.nbd_tls = protocol::NbdTls::Psk;
  b.nbd_psk_identity = "vma-" + new_token().substr(4, 16);
  b.nbd_psk_key = new_token().substr(4);
}

void PairingService::sync_nbd_psk_file() {
  if (config_.nbd_psk_file.empty()) return;  // X.509
  std::ifstream in(config_.nbd_psk_file);
  if (!in) throw Error(fmt::format("cannot read the NBD TLS PSK file {}", config_.nbd_psk_file));
  std::string content;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line.rfind("vma-", 0) != 0) content += line + "\n";
  std::vector<VmaNbdAccess> approved;
  for (const auto& v : vmas_.list_vmas())
    if (v.state == VmaState::Approved && v.nbd_psk_sealed)
      approved.push_back({v.vma_id, secrets_.open(*v.nbd_psk_sealed, seal_binding(kVmaPskPurpose, v.vma_id))});
  if (!config_.set_nbd_access)
    for (const auto& a : approved) content += a.psk_line + "\n";
  // The OMA's file first: with per-VMA servers it must no longer hold any VMA's key.
  write_private_file(config_.nbd_psk_file, content);
  if (config_.set_nbd_access) config_.set_nbd_access(approved);
}

nlohmann::json PairingService::issue_bundle(std::optional<std::chrono::seconds> ttl) {
  protocol::PairingBundle b;
  b.ssh_host_key = first_line(config_.ssh_host_key_file, "the OMA's SSH public host key");
  add_nbd_tls(b);
  b.pairing_code = "mkp_" + new_token().substr(4);
  b.vma_api_token = new_token();
  int64_t now = now_ms();
  b.expires_at = now + std::chrono::duration_cast<std::chrono::milliseconds>(ttl.value_or(config_.code_ttl)).count();
  std::string code_hash = sha256_hex(b.pairing_code);
  std::optional<std::string> psk_sealed;
  if (b.nbd_tls == protocol::NbdTls::Psk)
    psk_sealed = secrets_.seal(*b.nbd_psk_identity + ":" + *b.nbd_psk_key, seal_binding(kCodePskPurpose, code_hash));
  {
    std::lock_guard lk(file_mutex_);
    b.oma_api_url = config_.api_url;
    b.oma_api_fingerprint = config_.api_fingerprint;
  }
  b.ssh_host = config_.ssh_host;
  b.ssh_port = config_.ssh_port;
  b.ssh_user = config_.ssh_user;
  b.nbd_host = config_.nbd_host;
  b.nbd_port = config_.nbd_advertise_port > 0 ? config_.nbd_advertise_port : config_.nbd_port;
  b.nodes = service_nodes();
  nlohmann::json bundle = protocol::encode(b);  // checked before the code is stored
  vmas_.insert_pairing_code(
      {code_hash, secrets_.seal(b.vma_api_token, seal_binding(kCodeTokenPurpose, code_hash)), now, b.expires_at,
       std::nullopt, std::nullopt, psk_sealed});
  log::info("issued a VMA pairing bundle (code valid until {} ms since epoch)", b.expires_at);
  return bundle;
}

PairingService::Enrolment PairingService::enroll(const std::string& pairing_code, const std::string& name,
                                                 const std::string& vcenter, const std::string& ssh_public_key,
                                                 const std::optional<std::string>& nbd_client_csr) {
  VmaRecord v;
  v.vma_id = new_uuid();
  v.name = name;
  v.vcenter = vcenter;
  v.ssh_public_key = normalize_vma_public_key(ssh_public_key);
  // Signed before the code is used, so that a bad request leaves the code usable.
  std::optional<std::string> cert;
  if (config_.nbd_client_ca) {
    if (!nbd_client_csr)
      throw UsageError("this OMA serves NBD with X.509 client certificates: the enrolment needs nbd_client_csr (a "
                       "certificate request for the VMA's NBD key, as `vma pair` makes from an x509 bundle)");
    try {
      cert = config_.nbd_client_ca->sign(v.vma_id, *nbd_client_csr);
    } catch (const UsageError& e) {
      throw UsageError(fmt::format("nbd_client_csr: {}", e.what()));
    }
  }
  // The certificate before the VMA's row: every node that sees the pending VMA (and
  // syncs its revocation list on that change) finds its certificate to list.
  if (cert) config_.nbd_client_ca->store(v.vma_id, *cert);
  try {
    // The code's secrets move to the VMA's row: re-sealed for it (bound to their row).
    v = vmas_.enroll_vma(sha256_hex(pairing_code), now_ms(), v, config_.tunnel_port_base,
                         [this](const std::string& sealed, const std::string& from, const std::string& to) {
                           return secrets_.seal(secrets_.open(sealed, from), to);
                         });
  } catch (...) {
    if (cert) config_.nbd_client_ca->forget(v.vma_id);  // a refused enrolment leaves nothing
    throw;
  }
  if (cert) {
    std::lock_guard lk(file_mutex_);
    // On the revocation list until approved: nbdkit restarts to read it.
    sync_nbd_client_certificates(fmt::format("VMA {} enrolled (its certificate waits for approval)", v.vma_id));
  }
  log::info("VMA {} ({}, vCenter {}) enrolled, tunnel port {}{}: waiting for approval", v.vma_id, v.name, v.vcenter,
            v.tunnel_port, cert ? ", NBD client certificate issued" : "");
  return {v, cert};
}

VmaRecord PairingService::approve(const std::string& vma_id) {
  vmas_.set_vma_state(vma_id, VmaState::Approved);
  sync_access();
  VmaRecord v = vmas_.get_vma(vma_id);
  log::info("VMA {} ({}) approved: its key may hold 127.0.0.1:{}", v.vma_id, v.name, v.tunnel_port);
  return v;
}

TunnelSessionEnd PairingService::revoke(const std::string& vma_id) {
  vmas_.set_vma_state(vma_id, VmaState::Revoked);
  // Key first, session second: the VMA's reconnection is refused.
  sync_access();
  VmaRecord v = vmas_.get_vma(vma_id);
  TunnelSessionEnd end = end_session(v);
  log::info("VMA {} ({}) revoked; {}: {}", v.vma_id, v.name, outcome_name(end.outcome), end.message);
  return end;
}

TunnelSessionEnd PairingService::end_session(const VmaRecord& v) {
  return end_vma_tunnel_session(static_cast<int>(v.tunnel_port), config_.tunnel_session_helper,
                                std::chrono::seconds(15), config_.tunnel_address);
}

std::vector<protocol::ServiceNode> PairingService::service_nodes() const {
  return config_.service_nodes ? config_.service_nodes() : std::vector<protocol::ServiceNode>{};
}

std::string PairingService::tunnel_state(const VmaRecord& vma) {
  return loopback_port_answers(static_cast<int>(vma.tunnel_port), std::chrono::seconds(2), config_.tunnel_address)
             ? "up"
             : "down";
}

std::unique_ptr<VmaClient> PairingService::client(const VmaRecord& vma) {
  return std::make_unique<HttpVmaClient>(fmt::format("http://{}:{}", config_.tunnel_address, vma.tunnel_port),
                                         config_.vma_timeout,
                                         secrets_.open(vma.api_token_sealed, seal_binding(kVmaTokenPurpose, vma.vma_id)));
}

std::shared_ptr<VmaClient> PairingService::client_for_vm(const std::string& vm_id) {
  auto vma_id = vms_.vm_vma(vm_id);
  if (!vma_id) return nullptr;
  VmaRecord v = vmas_.get_vma(*vma_id);
  if (v.state != VmaState::Approved)
    throw VmaUnreachable(fmt::format("VM {} belongs to VMA {} ({}), which is {}: {}", vm_id, v.vma_id, v.name,
                                     v.state,
                                     v.state == VmaState::Pending ? "approve it (POST /api/v1/vmas/{id}/approve)"
                                                          : "pair a new VMA for its vCenter"));
  return client(v);
}

nlohmann::json PairingService::health(const std::string& vma_id) {
  VmaRecord v = vmas_.get_vma(vma_id);
  std::string tunnel = tunnel_state(v);
  nlohmann::json out = {{"vma_id", v.vma_id},
                        {"name", v.name},
                        {"state", v.state},
                        {"tunnel", {{"port", v.tunnel_port}, {"state", tunnel}}},
                        {"vma", nullptr},
                        {"error", nullptr}};
  if (tunnel != "up") {
    out["error"] = fmt::format("nothing answers on the VMA's tunnel port {}:{}: {}", config_.tunnel_address,
                               v.tunnel_port,
                               v.state == VmaState::Approved
                                   ? "the VMA's tunnel is down (check the VMA's health and its network path to this "
                                     "OMA's SSH port)"
                                   : "the VMA is " + enum_name(v.state));
    return out;
  }
  try {
    out["vma"] = protocol::encode(client(v)->health());
  } catch (const std::exception& e) {
    out["error"] = fmt::format("the tunnel port answers but the VMA's health call failed: {}", e.what());
  }
  return out;
}

}  // namespace mk::oma
