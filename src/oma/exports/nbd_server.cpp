#include "oma/exports/nbd_server.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <algorithm>
#include <fstream>
#include <vector>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/subprocess.h"
#include "engine/nbd_connection.h"
#include "oma/exports/nbdkit_server.h"
#include "oma/names.h"

namespace fs = std::filesystem;

namespace mk::oma {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// nbd-server's config syntax has no quoting: refuse anything that could break a line.
void check_config_value(const std::string& v, const std::string& what) {
  if (v.empty() || v[0] != '/' || v.find_first_of("\n\r[]#;=\0", 0, 8) != std::string::npos) {
    throw UsageError(fmt::format("{} '{}' cannot go into nbd-server's configuration (absolute path without "
                                 "line breaks, brackets, '#', ';' or '=')",
                                 what, v.substr(0, 80)));
  }
}

}  // namespace

NbdServerExportServer::NbdServerExportServer(ExportServerConfig config) : config_(std::move(config)) {
  if (config_.tls.certificates_dir.empty()) {
    throw UsageError("the nbd-server export backend needs an X.509 certificates directory (nbd-server has no PSK "
                     "TLS); or use the nbdkit backend");
  }
  check_config_value(config_.exports_dir, "exports directory");
  check_config_value(config_.tls.certificates_dir, "certificates directory");
  conf_ = config_.exports_dir + "/nbd-server.conf";
  conf_d_ = config_.exports_dir + "/conf.d";
  pidfile_ = config_.exports_dir + "/nbd-server.pid";
  std::error_code ec;
  fs::create_directories(conf_d_, ec);
  if (ec) throw Error(fmt::format("cannot create {}: {}", conf_d_, ec.message()));
}

NbdServerExportServer::~NbdServerExportServer() {
  // The daemon is meant to outlive the OMA; only the supervisor stops here.
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
}

void NbdServerExportServer::write_config() {
  const std::string& d = config_.tls.certificates_dir;
  std::string placeholder = config_.exports_dir + "/placeholder.img";
  if (!fs::exists(placeholder)) write_private_file(placeholder, std::string(4096, '\0'));
  std::string text = fmt::format(
      "# Written by the OMA; exports are in conf.d/, one file each.\n[generic]\n"
      "    listenaddr = {}\n    port = {}\n    allowlist = true\n    tlsonly = true\n"
      "    certfile = {}/server-cert.pem\n    keyfile = {}/server-key.pem\n    cacertfile = {}/ca-cert.pem\n"
      "    includedir = {}\n"
      "# nbd-server refuses to start without an export: a small read-only placeholder.\n"
      "[oma-placeholder]\n    exportname = {}\n    readonly = true\n",
      config_.listen_address, config_.port, d, d, d, conf_d_, placeholder);
  if (slurp(conf_) != text) write_private_file(conf_, text);
}

pid_t NbdServerExportServer::running_daemon() const {
  std::ifstream in(pidfile_);
  pid_t pid = 0;
  if (!(in >> pid) || pid <= 1) return 0;
  // The PID must still be an nbd-server (PIDs are reused).
  std::string comm = slurp(fmt::format("/proc/{}/comm", pid));
  return comm.rfind("nbd-server", 0) == 0 ? pid : 0;
}

void NbdServerExportServer::launch() {
  write_config();
  ::unlink(pidfile_.c_str());
  SpawnOptions o;
  o.stdout_path = config_.log_path;
  o.stderr_path = config_.log_path;
  o.die_with_parent = false;  // it daemonizes and must outlive the OMA
  // nbd-server forks into the background; the process we start exits once it has.
  Subprocess starter = Subprocess::spawn({"nbd-server", "-C", conf_, "-p", pidfile_}, o);
  int status = starter.wait();
  if (status != 0) throw Error(fmt::format("nbd-server failed to start (status {}); its log: {}", status, config_.log_path));
  for (int i = 0; i < 500 && !running_daemon(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  pid_t pid = running_daemon();
  if (!pid) throw Error(fmt::format("nbd-server did not write its pidfile {}; its log: {}", pidfile_, config_.log_path));
  pid_ = pid;
  // Its pidfile comes before its listening socket: exports are served once it accepts.
  auto ended = [this]() -> std::optional<std::string> {
    if (running_daemon()) return std::nullopt;
    return std::string("exited");
  };
  wait_for_listen(config_.listen_address, config_.port, ended, "nbd-server", config_.log_path, std::chrono::seconds(15));
  log::info("nbd-server serving {} on {}:{} (pid {})", conf_d_, config_.listen_address, config_.port, pid);
}

void NbdServerExportServer::start() {
  std::lock_guard lock(mu_);
  if (supervisor_.joinable()) return;
  stopping_ = false;
  if (config_.port == 0) throw UsageError("the nbd-server backend needs a fixed port (it keeps running across OMA restarts)");
  log::warn("the nbd-server export backend cannot count the bytes written to an export: the OMA cannot check that "
            "a disk the VMA reports completed was written (use the nbdkit backend for that check)");
  if (pid_t pid = running_daemon()) {
    pid_ = pid;  // adopt the daemon from before an OMA restart: its exports are intact
    log::info("adopting running nbd-server pid {}", pid);
  } else {
    launch();
  }
  supervisor_ = std::thread([this] { supervise(); });
}

void NbdServerExportServer::supervise() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_ || ::kill(pid_.load(), 0) == 0) continue;
    log::warn("nbd-server (pid {}) is gone: restarting it with every export in {}", pid_.load(), conf_d_);
    try {
      launch();
      restarts_++;
    } catch (const std::exception& e) {
      log::error("cannot restart nbd-server: {}", e.what());
    }
  }
}

void NbdServerExportServer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  pid_t pid = running_daemon();
  if (!pid) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 500 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
}

void NbdServerExportServer::publish(const std::string& export_name, const std::string& device_path) {
  if (!is_export_name(export_name)) {
    throw UsageError(fmt::format("'{}' is not an export name the OMA makes (migration-vm-UUID-diskN)", export_name));
  }
  check_config_value(device_path, "export " + export_name + " device path");
  std::string text = fmt::format("[{}]\n    exportname = {}\n", export_name, device_path);
  std::string file = conf_d_ + "/" + export_name + ".conf";
  std::lock_guard lock(mu_);
  std::string old = slurp(file);
  if (old == text) return;
  if (!old.empty()) {
    throw Error(fmt::format("export {} already serves another device on nbd-server, which cannot repoint an "
                            "export without a restart; stop its copies and restart nbd-server",
                            export_name));
  }
  write_private_file(file, text);
  pid_t pid = pid_.load();
  if (pid <= 0) return;  // not started yet: start() loads every export in conf.d
  if (::kill(pid, SIGHUP) != 0) {
    throw Error(fmt::format("cannot signal nbd-server pid {} to load export {}: {}", pid, export_name,
                            std::strerror(errno)));
  }
  reloads_++;
  // The reload is asynchronous: wait until the export answers. (Probing at once races
  // with the reload inside the daemon, which nbd-server handles badly: give it a moment.)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::string last;
  for (int i = 1; i <= 500; ++i) {
    try {
      mk::engine::NbdConnection::open(endpoint(export_name));
      log::info("export {} -> {} (nbd-server pid {} reloaded by SIGHUP)", export_name, device_path, pid);
      return;
    } catch (const std::exception& e) {
      last = e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    // A reload that raced with something in the daemon can leave it refusing new
    // connections; another SIGHUP (harmless: only new exports are added) has been seen
    // to bring it back.
    if (::kill(pid, 0) != 0) {
      // The daemon died of the reload (seen with nbd-server 3.24). Connections already
      // served live on in its forked children; start a new daemon with every export.
      log::error("nbd-server pid {} died after SIGHUP for export {}: starting a new one", pid, export_name);
      launch();
      restarts_++;
      pid = pid_.load();
      continue;
    }
    if (i % 100 == 0 && ::kill(pid, SIGHUP) == 0) {
      reloads_++;
      log::warn("nbd-server pid {} still does not serve export {}: SIGHUP again ({})", pid, export_name, last);
    }
  }
  throw Error(fmt::format("nbd-server did not serve export {} after SIGHUP: {}", export_name, last));
}

void NbdServerExportServer::unpublish(const std::string& export_name) {
  if (!is_export_name(export_name)) throw UsageError(fmt::format("'{}' is not an export name", export_name));
  // nbd-server keeps serving it until its next restart; the file is what survives.
  std::string file = conf_d_ + "/" + export_name + ".conf";
  if (::unlink(file.c_str()) != 0 && errno != ENOENT) {
    throw Error(fmt::format("cannot remove {}: {}", file, std::strerror(errno)));
  }
}

void NbdServerExportServer::cut_off(const std::vector<std::string>& export_names) {
  for (const auto& e : export_names) unpublish(e);
  throw Error(fmt::format("the nbd-server backend cannot close connections already open on {} (its forked "
                          "children keep serving them): stop the copy on the VMA, or switch to the nbdkit backend",
                          fmt::join(export_names, ", ")));
}

bool NbdServerExportServer::publishes(const std::string& export_name) const {
  if (!is_export_name(export_name)) return false;
  std::error_code ec;
  return std::filesystem::exists(conf_d_ + "/" + export_name + ".conf", ec);
}

std::vector<pid_t> NbdServerExportServer::connections_on(const std::string& device_path) const {
  namespace fs = std::filesystem;
  std::vector<pid_t> out;
  pid_t daemon = pid_.load();
  std::error_code ec;
  fs::path device = fs::canonical(device_path, ec);
  if (daemon <= 0 || ec) return out;  // no daemon, or the device is gone: nothing can hold it
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    // /proc/PID/stat: "pid (comm) state ppid ..."; comm may hold spaces: after the last ')'.
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 1));
    std::string state;
    long ppid = 0;
    if (!(rest >> state >> ppid) || ppid != daemon) continue;
    std::error_code fe;
    for (const auto& fd : fs::directory_iterator(entry.path() / "fd", fe)) {
      std::error_code le;
      fs::path target = fs::read_symlink(fd.path(), le);
      if (!le && target == device) {
        out.push_back(static_cast<pid_t>(std::stol(name)));
        break;
      }
    }
  }
  return out;
}

int NbdServerExportServer::close_connections(const std::string& device_path) {
  int n = 0;
  for (pid_t child : connections_on(device_path)) {
    if (::kill(child, SIGKILL) == 0) {
      ++n;
      log::warn("nbd-server connection process {} serving {} ended (fenced)", child, device_path);
    }
  }
  return n;
}

Endpoint NbdServerExportServer::endpoint(const std::string& export_name) const {
  Endpoint e;
  e.uri = fmt::format("nbds://{}:{}/{}", client_address(config_.listen_address), config_.port, export_name);
  e.tls.certificates_dir = config_.tls.certificates_dir;
  e.role = "export";
  return e;
}

}  // namespace mk::oma
