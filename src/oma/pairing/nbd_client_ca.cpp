#include "oma/pairing/nbd_client_ca.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/tls.h"
#include "oma/db/sealed_values.h"
#include "oma/names.h"

namespace fs = std::filesystem;

namespace mk::oma {
namespace {

// A file's bytes; nullopt when it cannot be read.
std::optional<std::string> contents(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string operator_file(const std::string& dir, const char* name) {
  std::string path = dir + "/" + name;
  auto text = contents(path);
  if (!text || text->empty())
    throw Error(fmt::format("cannot read {} for the NBD server's TLS: --tls-certificates {} must hold ca-cert.pem, "
                            "server-cert.pem and server-key.pem, readable by the OMA",
                            path, dir));
  return *text;
}

// Writes `text` to `path` (0600, atomically) unless it holds exactly that already.
// Returns whether it wrote.
bool write_if_changed(const std::string& path, const std::string& text) {
  if (contents(path) == text) return false;
  write_private_file(path, text);
  return true;
}

void make_dir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw Error(fmt::format("cannot create {}: {}", dir, ec.message()));
  ::chmod(dir.c_str(), 0700);
}

constexpr const char* kOmaClientName = "oma";
constexpr const char* kCaName = "MigrateKit OMA NBD client CA";

}  // namespace

NbdClientCa::NbdClientCa(std::string state_dir, std::string operator_dir, db::Database& db, const SecretBox& secrets,
                         std::string node_id)
    : state_dir_(std::move(state_dir)), operator_dir_(std::move(operator_dir)), shared_(db), secrets_(secrets) {
  for (const char* sub : {"", "/client-ca", "/issued", "/nbdkit"}) make_dir(state_dir_ + sub);
  for (const char* name : {"ca-cert.pem", "server-cert.pem", "server-key.pem"}) operator_file(operator_dir_, name);
  auto stored = shared_.find_ca();
  if (!stored) {
    // This node's CA from before the CA was shared, or a new one; the first node to
    // store its own wins, and the others take it below.
    auto local_cert = contents(ca_cert_file()), local_key = contents(ca_key_file());
    bool local = local_cert && local_key;
    NbdClientCaRecord candidate = local ? NbdClientCaRecord{} : new_ca();
    if (local) {
      candidate.cert_pem = *local_cert;
      candidate.key_sealed = secrets_.seal(*local_key, seal_binding(kNbdCaKeyPurpose, candidate.name));
    }
    candidate.created_by = std::move(node_id);
    candidate.created_at = now_ms();
    stored = shared_.insert_ca_if_absent(candidate);
    if (stored->cert_pem == candidate.cert_pem && local) {
      adopt_issued_certificates();
    } else if (stored->cert_pem == candidate.cert_pem) {
      log::info("made the OMA service's CA for NBD client certificates (kept in {}, its key sealed with secrets.key): "
                "VMAs get certificates it signs",
                db.describe());
    }
  }
  bool installed = install(*stored);
  std::string own_key = nbdkit_dir() + "/client-key.pem", own_cert = nbdkit_dir() + "/client-cert.pem";
  if (installed || !fs::exists(own_key) || !fs::exists(own_cert)) {  // signed by this CA
    std::string csr = tls::make_key_and_csr(own_key, kOmaClientName);
    write_private_file(own_cert, tls::sign_client_certificate(ca_cert_file(), ca_key_file(), csr, kOmaClientName,
                                                              "urn:migratekit:oma"));
  }
}

NbdClientCaRecord NbdClientCa::new_ca() const {
  std::string cert = state_dir_ + "/client-ca/new-ca-cert.pem", key = state_dir_ + "/client-ca/new-ca-key.pem";
  tls::make_ca_certificate(cert, key, kCaName);
  NbdClientCaRecord r;
  r.cert_pem = *contents(cert);
  r.key_sealed = secrets_.seal(*contents(key), seal_binding(kNbdCaKeyPurpose, r.name));
  fs::remove(cert);
  fs::remove(key);
  return r;
}

// A single OMA from before the CA was shared: the certificates it issued go with its CA,
// so its VMAs keep connecting (to every node).
void NbdClientCa::adopt_issued_certificates() {
  int n = 0;
  for (const auto& f : fs::directory_iterator(state_dir_ + "/issued")) {
    if (f.path().extension() != ".pem") continue;
    auto pem = contents(f.path().string());
    if (!pem) throw Error(fmt::format("cannot read the issued certificate {}", f.path().string()));
    n += shared_.add_certificate_if_absent(f.path().stem().string(), *pem, now_ms());
  }
  log::info("the OMA's CA for NBD client certificates in {} is now the service's (kept in the database, its key "
            "sealed with secrets.key), with the {} certificate(s) it issued: they stay valid on every OMA node",
            state_dir_ + "/client-ca", n);
}

bool NbdClientCa::install(const NbdClientCaRecord& ca) {
  std::string key = secrets_.open(ca.key_sealed, seal_binding(kNbdCaKeyPurpose, ca.name));
  auto old_cert = contents(ca_cert_file());
  if (old_cert == ca.cert_pem && contents(ca_key_file()) == key) return false;
  if (old_cert && !old_cert->empty()) {
    // This node had a CA of its own: the database's is the service's. The old files stay
    // beside (an operator may want them); its VMAs' certificates no longer verify.
    std::string suffix = ".replaced-" + tls::certificate_serial(*old_cert);
    fs::rename(ca_cert_file(), ca_cert_file() + suffix);
    if (fs::exists(ca_key_file())) fs::rename(ca_key_file(), ca_key_file() + suffix);
    auto shared = shared_.certificates();
    std::string stale;
    for (const auto& f : fs::directory_iterator(state_dir_ + "/issued")) {
      auto id = f.path().stem().string();
      auto it = shared.find(id);
      if (f.path().extension() == ".pem" && (it == shared.end() || it->second != contents(f.path().string())))
        stale += (stale.empty() ? "" : ", ") + id;
    }
    log::warn("this node's CA for NBD client certificates ({}) is not the service's CA in the database (made by node "
              "'{}'): it now uses the database's, and kept its old one as {}. Certificates of the old CA no longer "
              "verify: {}",
              state_dir_ + "/client-ca", ca.created_by, ca_cert_file() + suffix,
              stale.empty() ? "no VMA holds one"
                            : "these VMAs must be paired again (vma pair with a new bundle, approve the new VMA, "
                              "revoke the old one): " + stale);
  }
  write_private_file(ca_key_file(), key);
  write_private_file(ca_cert_file(), ca.cert_pem);
  return true;
}

std::string NbdClientCa::sign(const std::string& vma_id, const std::string& csr_pem) const {
  check_uuid(vma_id, "vma_id");
  return tls::sign_client_certificate(ca_cert_file(), ca_key_file(), csr_pem, vma_id, "urn:uuid:" + vma_id);
}

void NbdClientCa::store(const std::string& vma_id, const std::string& cert_pem) {
  check_uuid(vma_id, "vma_id");
  shared_.put_certificate(vma_id, cert_pem, now_ms());
}

void NbdClientCa::forget(const std::string& vma_id) { shared_.remove_certificate(vma_id); }

bool NbdClientCa::sync(const std::set<std::string>& allowed_vma_ids) {
  std::lock_guard lock(mu_);
  std::vector<std::string> revoked;
  std::string serials;  // what the list holds, to tell a change from a rewrite
  // Every node's certificates (the database's), by VMA id: the list is the same on every
  // node once each has synced with the same VMA states.
  for (const auto& [vma_id, pem] : shared_.certificates()) {
    if (allowed_vma_ids.count(vma_id)) continue;
    revoked.push_back(pem);
    serials += tls::certificate_serial(pem) + "\n";
  }
  std::string dir = nbdkit_dir();
  bool changed = write_if_changed(dir + "/server-cert.pem", operator_file(operator_dir_, "server-cert.pem"));
  changed = write_if_changed(dir + "/server-key.pem", operator_file(operator_dir_, "server-key.pem")) || changed;
  std::string bundle = operator_file(operator_dir_, "ca-cert.pem");
  if (!bundle.ends_with('\n')) bundle += '\n';
  bundle += *contents(ca_cert_file());
  changed = write_if_changed(dir + "/ca-cert.pem", bundle) || changed;
  // The NBD router trusts only this CA for clients (the operator's may sign any name).
  changed = write_if_changed(dir + "/client-ca.pem", *contents(ca_cert_file())) || changed;
  // The list is signed with a time, so its bytes differ at every writing: compare the
  // serials it lists.
  std::string serials_file = state_dir_ + "/revoked-serials";
  if (contents(serials_file) != serials || !fs::exists(dir + "/ca-crl.pem")) {
    write_private_file(dir + "/ca-crl.pem",
                       tls::make_crl(ca_cert_file(), ca_key_file(), revoked));
    write_private_file(serials_file, serials);
    changed = true;
  }
  return changed;
}

}  // namespace mk::oma
