#include "oma/exports/nbdkit_server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "oma/names.h"

namespace fs = std::filesystem;

namespace mk::oma {
namespace {

bool accepts(const std::string& address, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) return false;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

std::string tail(const std::string& path) {
  if (path.empty()) return "(no log)";
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > 1500 ? s.substr(s.size() - 1500) : s;
}

// Replaces (or creates) dir/name as a symlink to target in one rename(2).
void atomic_symlink(const std::string& dir, const std::string& name, const std::string& target) {
  static std::atomic<unsigned> counter{0};
  std::string tmp = fmt::format("{}/.tmp-{}.{}.{}", dir, name, ::getpid(), counter++);
  if (::symlink(target.c_str(), tmp.c_str()) != 0) {
    throw Error(fmt::format("export {}: cannot create a symlink in {}: {} (check the exports directory)", name, dir,
                            std::strerror(errno)));
  }
  if (::rename(tmp.c_str(), (dir + "/" + name).c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw Error(fmt::format("export {}: cannot move its symlink into {}: {}", name, dir, std::strerror(e)));
  }
}

}  // namespace

std::string client_address(const std::string& listen_address) {
  return listen_address == "0.0.0.0" || listen_address.empty() ? "127.0.0.1" : listen_address;
}

void wait_for_listen(const std::string& address, int port, Subprocess& process, const std::string& what,
                     const std::string& log_path, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (accepts(client_address(address), port)) return;
    if (!process.running()) {
      throw Error(fmt::format("{} exited (status {}) before listening on {}:{} (port taken?); its log {}:\n{}", what,
                              process.exit_status().value_or(-1), address, port, log_path, tail(log_path)));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw Error(fmt::format("{} did not listen on {}:{} within {} ms; its log {}:\n{}", what, address, port,
                              timeout.count(), log_path, tail(log_path)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

NbdkitExportServer::NbdkitExportServer(ExportServerConfig config) : config_(std::move(config)) {
  if (config_.tls.psk_file.empty() == config_.tls.certificates_dir.empty()) {
    throw UsageError("the NBD export server needs TLS: give a PSK keys file or an X.509 certificates "
                     "directory (exactly one)");
  }
  std::error_code ec;
  fs::create_directories(config_.exports_dir, ec);
  if (ec) throw Error(fmt::format("cannot create the exports directory {}: {}", config_.exports_dir, ec.message()));
}

NbdkitExportServer::~NbdkitExportServer() { stop(); }

std::vector<std::string> NbdkitExportServer::argv() const {
  std::vector<std::string> a = {"nbdkit", "-f", "-i", config_.listen_address, "-p", std::to_string(config_.port),
                                "--tls=require"};
  if (!config_.tls.psk_file.empty()) a.push_back("--tls-psk=" + config_.tls.psk_file);
  else a.push_back("--tls-certificates=" + config_.tls.certificates_dir);
  a.insert(a.end(), {"file", "dir=" + config_.exports_dir});
  return a;
}

void NbdkitExportServer::launch() {
  SpawnOptions opt;
  opt.stdout_path = config_.log_path;
  opt.stderr_path = config_.log_path;
  process_ = Subprocess::spawn(argv(), opt);
  pid_ = process_.pid();
  wait_for_listen(config_.listen_address, config_.port, process_, "nbdkit (exports)", config_.log_path,
                  std::chrono::seconds(15));
  log::info("nbdkit serving {} on {}:{} (pid {})", config_.exports_dir, config_.listen_address, config_.port,
            process_.pid());
}

static int pick_free_port(const std::string& address) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  inet_pton(AF_INET, client_address(address).c_str(), &a.sin_addr);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    if (fd >= 0) ::close(fd);
    throw Error(fmt::format("cannot find a free port on {}: {}", address, std::strerror(errno)));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

void NbdkitExportServer::start() {
  std::lock_guard lock(mu_);
  if (supervisor_.joinable()) return;
  stopping_ = false;
  if (config_.port != 0) {
    launch();
  } else {
    // Port 0: choose a free port (it may be taken between choosing and binding, so try
    // a few), then keep it for every restart.
    for (int attempt = 0;; ++attempt) {
      config_.port = pick_free_port(config_.listen_address);
      try {
        launch();
        break;
      } catch (const Error&) {
        process_.stop();
        if (attempt >= 4) throw;
      }
    }
  }
  supervisor_ = std::thread([this] { supervise(); });
}

void NbdkitExportServer::supervise() {
  std::unique_lock lock(mu_);
  int failures = 0;
  while (!stopping_) {
    cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (stopping_ || process_.running()) continue;
    log::warn("nbdkit (pid {}) exited with status {}: restarting it; exports are files and survive",
              process_.pid(), process_.exit_status().value_or(-1));
    try {
      launch();
      restarts_++;
      failures = 0;
    } catch (const std::exception& e) {
      // Keep trying (the port may be in TIME_WAIT), slower after repeated failures.
      log::error("cannot restart nbdkit: {}", e.what());
      if (++failures > 3) cv_.wait_for(lock, std::chrono::seconds(2));
    }
  }
}

void NbdkitExportServer::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  std::lock_guard lock(mu_);
  process_.stop();
}

void NbdkitExportServer::publish(const std::string& export_name, const std::string& device_path) {
  if (!is_export_name(export_name)) {
    throw UsageError(fmt::format("'{}' is not an export name the OMA makes (migration-vm-UUID-diskN)", export_name));
  }
  if (device_path.empty() || device_path[0] != '/' || device_path.find('\n') != std::string::npos) {
    throw UsageError(fmt::format("export {}: device path must be absolute", export_name));
  }
  std::string link = config_.exports_dir + "/" + export_name;
  std::error_code ec;
  if (fs::is_symlink(link, ec) && fs::read_symlink(link, ec).string() == device_path) return;
  if (fs::exists(fs::symlink_status(link, ec)) && !fs::is_symlink(link, ec)) {
    throw Error(fmt::format("export {}: {} exists and is not a symlink; move it away", export_name, link));
  }
  atomic_symlink(config_.exports_dir, export_name, device_path);
  log::info("export {} -> {} (nbdkit pid {} untouched)", export_name, device_path, pid_.load());
}

void NbdkitExportServer::unpublish(const std::string& export_name) {
  if (!is_export_name(export_name)) throw UsageError(fmt::format("'{}' is not an export name", export_name));
  std::string link = config_.exports_dir + "/" + export_name;
  if (::unlink(link.c_str()) != 0 && errno != ENOENT) {
    throw Error(fmt::format("export {}: cannot remove {}: {}", export_name, link, std::strerror(errno)));
  }
}

mk::engine::Endpoint NbdkitExportServer::endpoint(const std::string& export_name) const {
  mk::engine::Endpoint e;
  e.uri = fmt::format("nbds://{}:{}/{}", client_address(config_.listen_address), config_.port, export_name);
  e.tls.psk_file = config_.tls.psk_file;
  e.tls.certificates_dir = config_.tls.certificates_dir;
  e.role = "export";
  return e;
}

}  // namespace mk::oma
