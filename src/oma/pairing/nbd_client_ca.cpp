#include "oma/pairing/nbd_client_ca.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/tls.h"
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

}  // namespace

NbdClientCa::NbdClientCa(std::string state_dir, std::string operator_dir)
    : state_dir_(std::move(state_dir)), operator_dir_(std::move(operator_dir)) {
  for (const char* sub : {"", "/client-ca", "/issued", "/nbdkit"}) make_dir(state_dir_ + sub);
  for (const char* name : {"ca-cert.pem", "server-cert.pem", "server-key.pem"}) operator_file(operator_dir_, name);
  std::string ca_key = state_dir_ + "/client-ca/ca-key.pem";
  if (!fs::exists(ca_key) || !fs::exists(ca_cert_file())) {
    tls::make_ca_certificate(ca_cert_file(), ca_key, "MigrateKit OMA NBD client CA");
    log::info("made the OMA's CA for NBD client certificates in {} (key mode 0600): VMAs get certificates it signs",
              state_dir_ + "/client-ca");
  }
  std::string own_key = nbdkit_dir() + "/client-key.pem", own_cert = nbdkit_dir() + "/client-cert.pem";
  if (!fs::exists(own_key) || !fs::exists(own_cert)) {
    std::string csr = tls::make_key_and_csr(own_key, kOmaClientName);
    write_private_file(own_cert, tls::sign_client_certificate(ca_cert_file(), ca_key, csr, kOmaClientName,
                                                              "urn:migratekit:oma"));
  }
}

std::string NbdClientCa::issued_file(const std::string& vma_id) const {
  check_uuid(vma_id, "vma_id");  // before it becomes a file name
  return state_dir_ + "/issued/" + vma_id + ".pem";
}

std::string NbdClientCa::sign(const std::string& vma_id, const std::string& csr_pem) const {
  check_uuid(vma_id, "vma_id");
  return tls::sign_client_certificate(ca_cert_file(), state_dir_ + "/client-ca/ca-key.pem", csr_pem, vma_id,
                                      "urn:uuid:" + vma_id);
}

void NbdClientCa::store(const std::string& vma_id, const std::string& cert_pem) {
  std::lock_guard lock(mu_);
  write_private_file(issued_file(vma_id), cert_pem);
}

bool NbdClientCa::sync(const std::set<std::string>& allowed_vma_ids) {
  std::lock_guard lock(mu_);
  std::vector<std::string> revoked;
  std::string serials;  // what the list holds, to tell a change from a rewrite
  std::vector<fs::path> issued;
  for (const auto& f : fs::directory_iterator(state_dir_ + "/issued")) {
    if (f.path().extension() == ".pem") issued.push_back(f.path());
  }
  std::sort(issued.begin(), issued.end());
  for (const auto& path : issued) {
    if (allowed_vma_ids.count(path.stem().string())) continue;
    auto pem = contents(path.string());
    if (!pem) throw Error(fmt::format("cannot read the issued certificate {}", path.string()));
    revoked.push_back(*pem);
    serials += tls::certificate_serial(*pem) + "\n";
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
                       tls::make_crl(ca_cert_file(), state_dir_ + "/client-ca/ca-key.pem", revoked));
    write_private_file(serials_file, serials);
    changed = true;
  }
  return changed;
}

}  // namespace mk::oma
