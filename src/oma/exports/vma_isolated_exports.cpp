#include "oma/exports/vma_isolated_exports.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <cstring>
#include <set>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "oma/exports/nbd_router.h"
#include "oma/names.h"

namespace fs = std::filesystem;

namespace mk::oma {
namespace {

constexpr const char* kMainSocket = ".oma.sock";  // not a routable identity: reached only by symlinks
constexpr const char* kOmaIdentity = "oma";       // X.509: the CN of the OMA's own client certificate

void private_dir(const std::string& path) {
  std::error_code ec;
  fs::create_directories(path, ec);
  if (ec || ::chmod(path.c_str(), 0700) != 0)
    throw Error(fmt::format("cannot create the private directory {}: {}", path,
                            ec ? ec.message() : std::string(std::strerror(errno))));
}

std::string identity_of(const std::string& psk_line) {
  auto colon = psk_line.find(':');
  return colon == std::string::npos ? "" : psk_line.substr(0, colon);
}

std::string vm_of_export(const std::string& export_name) {
  return export_name.substr(std::string_view("migration-vm-").size(), 36);  // is_export_name() checked
}

}  // namespace

VmaIsolatedExports::VmaIsolatedExports(ExportServerConfig config, std::string isolation_dir,
                                       std::function<std::optional<std::string>(const std::string&)> vma_of_vm)
    : config_(std::move(config)),
      isolation_dir_(std::move(isolation_dir)),
      sockets_dir_(isolation_dir_ + "/sockets"),
      vma_of_vm_(std::move(vma_of_vm)) {
  if (config_.tls.psk_file.empty() == config_.tls.certificates_dir.empty())
    throw UsageError("per-VMA NBD isolation needs the OMA's PSK file or its X.509 certificates directory (one)");
  x509_ = !config_.tls.certificates_dir.empty();
  if (x509_) config_.tls.certificates_dir = fs::absolute(config_.tls.certificates_dir).lexically_normal().string();
  // Absolute: the VMAs' export links point into EXPORTS_DIR and nbdkit wants them so.
  config_.exports_dir = fs::absolute(config_.exports_dir).lexically_normal().string();
  isolation_dir_ = fs::absolute(isolation_dir_).lexically_normal().string();
  sockets_dir_ = isolation_dir_ + "/sockets";
  private_dir(isolation_dir_);
  private_dir(sockets_dir_);
  private_dir(isolation_dir_ + "/vma");
  if (config_.written_dir.empty()) config_.written_dir = config_.exports_dir + "-written";
  config_.written_dir = fs::absolute(config_.written_dir).lexically_normal().string();
  if (config_.keep_running) private_dir(kept_servers_dir(config_.record_path));

  ExportServerConfig m = config_;
  m.unix_socket = sockets_dir_ + "/" + kMainSocket;
  m.log_path = isolation_dir_ + "/oma-nbdkit.log";
  m.record_path = kept_servers_dir(config_.record_path) + "/oma.json";
  if (x509_) m.tls = {};  // the router ends TLS; plain NBD behind it
  main_ = std::make_unique<NbdkitExportServer>(m);

  ExportServerConfig r = config_;
  r.router_sockets_dir = sockets_dir_;
  if (x509_) r.router_tls_certificates_dir = config_.tls.certificates_dir;
  router_ = std::make_unique<NbdkitExportServer>(r);
}

VmaIsolatedExports::~VmaIsolatedExports() { stop(); }

void VmaIsolatedExports::sync_main_identities() {
  // Every identity of the OMA's own PSK file reaches the OMA's nbdkit; with X.509, the
  // OMA's own client certificate (CN "oma", NbdClientCa).
  std::ifstream in(config_.tls.psk_file);
  std::vector<std::string> lines;
  if (x509_) lines.push_back(std::string(kOmaIdentity) + ":");
  else
    for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::set<std::string> ids;
  for (const auto& line : lines) {
    std::string id = identity_of(line);
    if (id.empty() || id.rfind("vma-", 0) == 0) continue;  // "vma-" identities are the VMAs' own
    if (!is_routable_identity(id)) {
      log::warn("the PSK identity '{}' in {} is not a plain name ([A-Za-z0-9_-], at most 64): the NBD router will "
                "not route it; rename it",
                id.substr(0, 64), config_.tls.psk_file);
      continue;
    }
    ids.insert(id);
    std::string link = sockets_dir_ + "/" + id + ".sock";
    std::error_code ec;
    if (fs::is_symlink(link, ec) && fs::read_symlink(link, ec).string() == kMainSocket) continue;
    fs::remove(link, ec);
    fs::create_symlink(kMainSocket, link, ec);
    if (ec) throw Error(fmt::format("cannot create {}: {}", link, ec.message()));
  }
}

void VmaIsolatedExports::start() {
  main_->start();
  sync_main_identities();
  router_->start();
  if (config_.keep_running) {
    log::info("NBD isolation: the router (pid {}) on {}:{} and the OMA's nbdkit (pid {}) are kept across OMA "
              "restarts",
              router_->server_pid(), config_.listen_address, router_->port(), main_->server_pid());
  }
}

void VmaIsolatedExports::stop() {
  if (router_) router_->stop();
  std::map<std::string, VmaServer> servers;
  {
    std::lock_guard lk(mu_);
    servers.swap(vmas_);
  }
  for (auto& [id, s] : servers) s.server->stop();
  if (main_) main_->stop();
}

std::optional<std::string> VmaIsolatedExports::owner_of(const std::string& export_name) const {
  if (!vma_of_vm_) return std::nullopt;
  return vma_of_vm_(vm_of_export(export_name));
}

void VmaIsolatedExports::link_exports(const std::string& vma_id, VmaServer& s) {
  std::set<std::string> wanted;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(config_.exports_dir, ec)) {
    std::string name = e.path().filename().string();
    if (is_export_name(name) && owner_of(name) == vma_id) wanted.insert(name);
  }
  std::string dir = s.dir + "/exports";
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!wanted.count(name)) fs::remove(e.path(), ec);
  }
  for (const auto& name : wanted) s.server->publish(name, config_.exports_dir + "/" + name);
}

std::string VmaIsolatedExports::identity(const VmaNbdAccess& a) const {
  return x509_ ? a.vma_id : identity_of(a.psk_line);
}

void VmaIsolatedExports::set_vma_access(const std::vector<VmaNbdAccess>& approved) {
  std::lock_guard lk(mu_);
  std::map<std::string, const VmaNbdAccess*> want;
  for (const auto& a : approved) {
    std::string id = identity(a);
    if (x509_ ? !is_routable_identity(id) || id == kOmaIdentity
              : !is_routable_identity(id) || id.rfind("vma-", 0) != 0)
      throw UsageError(fmt::format("VMA {}: its NBD identity ({}) is not a plain name{}", a.vma_id,
                                   x509_ ? "its id" : "PSK identity", x509_ ? "" : " vma-NAME"));
    want[a.vma_id] = &a;
  }
  // Revoked (or no longer known) VMAs: their servers end now.
  for (auto it = vmas_.begin(); it != vmas_.end();) {
    auto w = want.find(it->first);
    if (w != want.end() && identity(*w->second) == it->second.identity) {
      ++it;
      continue;
    }
    pid_t pid = it->second.server->server_pid();
    it->second.server->terminate();
    std::error_code ec;
    fs::remove_all(it->second.dir, ec);
    log::warn("NBD: VMA {}'s nbdkit (pid {}, identity {}) ended: its open NBD sessions are closed", it->first, pid,
              it->second.identity);
    it = vmas_.erase(it);
  }
  // Kept servers of identities no VMA has any more (revoked while no OMA ran them).
  std::set<std::string> identities;
  for (const auto& [vma_id, a] : want) identities.insert(identity(*a));
  if (config_.keep_running) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(kept_servers_dir(config_.record_path), ec)) {
      std::string id = e.path().stem().string();
      // Every record there but the OMA's own server's is a VMA's (PSK "vma-…" or X.509 VMA
      // ids: a switch between modes ends the other mode's servers too).
      if (e.path().extension() == ".json" && id != "oma" && !identities.count(id)) {
        log::warn("NBD: {}", stop_one_kept_server(e.path().string(), std::chrono::milliseconds(200)));
        std::error_code rec;
        fs::remove_all(isolation_dir_ + "/vma/" + id, rec);
        fs::remove(sockets_dir_ + "/" + id + ".sock", rec);
      }
    }
  }
  std::string failures;
  for (const auto& [vma_id, a] : want) {
    std::string id = identity(*a);
    try {
      auto it = vmas_.find(vma_id);
      std::string dir = isolation_dir_ + "/vma/" + id;
      private_dir(dir);
      if (!x509_) write_private_file(dir + "/psk.keys", a->psk_line + "\n");  // nbdkit reads it at each handshake
      if (it == vmas_.end()) {
        ExportServerConfig c = config_;
        c.exports_dir = dir + "/exports";
        c.tls = x509_ ? TlsConfig{} : TlsConfig{dir + "/psk.keys", "", false};  // X.509: plain, behind the router
        c.unix_socket = sockets_dir_ + "/" + id + ".sock";
        c.log_path = dir + "/nbdkit.log";
        c.record_path = kept_servers_dir(config_.record_path) + "/" + id + ".json";
        VmaServer s{id, dir, std::make_unique<NbdkitExportServer>(c)};
        it = vmas_.emplace(vma_id, std::move(s)).first;
      }
      link_exports(vma_id, it->second);
      if (it->second.server->server_pid() <= 0) {
        it->second.server->start();
        log::info("NBD: VMA {}'s nbdkit (pid {}, identity {}) serves its VMs' exports behind the router", vma_id,
                  it->second.server->server_pid(), id);
      }
    } catch (const std::exception& e) {
      failures += fmt::format("{}VMA {}: {}", failures.empty() ? "" : "; ", vma_id, e.what());
      vmas_.erase(vma_id);
    }
  }
  if (!failures.empty()) throw Error(fmt::format("cannot serve NBD for every approved VMA: {}", failures));
}

void VmaIsolatedExports::publish(const std::string& export_name, const std::string& device_path) {
  main_->publish(export_name, device_path);  // checks the name and the path
  auto owner = owner_of(export_name);
  std::lock_guard lk(mu_);
  for (auto& [vma_id, s] : vmas_) {
    if (owner && *owner == vma_id) s.server->publish(export_name, config_.exports_dir + "/" + export_name);
    else s.server->unpublish(export_name);  // a VM that moved to another VMA
  }
}

void VmaIsolatedExports::unpublish(const std::string& export_name) {
  main_->unpublish(export_name);
  std::lock_guard lk(mu_);
  for (auto& [vma_id, s] : vmas_) s.server->unpublish(export_name);
}

void VmaIsolatedExports::cut_off(const std::vector<std::string>& export_names) {
  std::lock_guard lk(mu_);
  for (auto& [vma_id, s] : vmas_) {
    bool serves = false;
    std::error_code ec;
    for (const auto& n : export_names)
      if (fs::is_symlink(s.dir + "/exports/" + n, ec)) serves = true;
    if (serves) s.server->cut_off(export_names);
    else for (const auto& n : export_names) s.server->unpublish(n);
  }
  main_->cut_off(export_names);
}

Endpoint VmaIsolatedExports::endpoint(const std::string& export_name) const {
  Endpoint e;
  e.uri = fmt::format("nbds://{}:{}/{}", client_address(config_.listen_address), router_->port(), export_name);
  e.tls.psk_file = config_.tls.psk_file;
  e.tls.certificates_dir = config_.tls.certificates_dir;  // X.509: holds the OMA's client certificate
  e.role = "export";
  return e;
}

pid_t VmaIsolatedExports::server_pid() const { return router_->server_pid(); }
int VmaIsolatedExports::port() const { return router_->port(); }
bool VmaIsolatedExports::adopted() const { return router_->adopted(); }

int VmaIsolatedExports::restarts() const {
  std::lock_guard lk(mu_);
  int n = router_->restarts() + main_->restarts();
  for (const auto& [id, s] : vmas_) n += s.server->restarts();
  return n;
}

std::optional<uint64_t> VmaIsolatedExports::written_bytes(const std::string& export_name) const {
  return main_->written_bytes(export_name);
}

pid_t VmaIsolatedExports::vma_server_pid(const std::string& vma_id) const {
  std::lock_guard lk(mu_);
  auto it = vmas_.find(vma_id);
  return it == vmas_.end() ? -1 : it->second.server->server_pid();
}

}  // namespace mk::oma
