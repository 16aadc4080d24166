#include "oma/exports/nbdkit_server.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/server_probe.h"
#include "oma/exports/nbd_router.h"
#include "oma/names.h"

namespace fs = std::filesystem;

namespace mk::oma {
namespace {

// The Unix socket an argv makes nbdkit listen on ("-U PATH"), or "".
std::string unix_socket_of(const std::vector<std::string>& argv) {
  for (size_t i = 0; i + 1 < argv.size(); ++i)
    if (argv[i] == "-U") return argv[i + 1];
  return "";
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

// A pidfd for `pid` (stays valid, and never names another process, after it exits), or
// -1 where the kernel lacks pidfd_open: then callers fall back to kill(pid, 0).
int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  (void)pid;
  return -1;
#endif
}

bool pid_alive(pid_t pid, int pidfd) {
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    return ::poll(&p, 1, 0) == 0;  // readable once the process has exited
  }
  return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
}

std::string read_cmdline(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// True when process `pid` holds a TCP socket listening on `port`: the one answering
// there is that process, not another one that took the port (a free port picked by a
// parallel start, a stale server).
bool owns_listener(pid_t pid, int port) {
  std::set<std::string> inodes;
  for (const char* table : {"tcp", "tcp6"}) {
    std::ifstream in(fmt::format("/proc/{}/net/{}", pid, table));
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string slot, local, remote, state, queues, timer, retr, uid, timeout, inode;
      f >> slot >> local >> remote >> state >> queues >> timer >> retr >> uid >> timeout >> inode;
      auto colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
      if (std::stoi(local.substr(colon + 1), nullptr, 16) == port) inodes.insert("socket:[" + inode + "]");
    }
  }
  if (inodes.empty()) return false;
  std::error_code ec;
  for (const auto& fd : fs::directory_iterator(fmt::format("/proc/{}/fd", pid), ec)) {
    std::error_code lec;
    auto target = fs::read_symlink(fd.path(), lec);
    if (!lec && inodes.count(target.string())) return true;
  }
  return false;
}

std::string joined_cmdline(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) s += a + '\0';
  return s;
}

}  // namespace

std::optional<KeptServerRecord> read_kept_server_record(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  try {
    return parse_kept_server_record(std::string(std::istreambuf_iterator<char>(in), {}));
  } catch (const std::exception& e) {
    throw Error(fmt::format("the export server record {} is unreadable ({}); remove it after checking that no "
                            "old nbdkit still runs",
                            path, e.what()));
  }
}

KeptServerRecord parse_kept_server_record(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) throw Error("not a JSON object");
  // Integers only, checked before they are narrowed: a PID of 0 or -1 would make the
  // kill() of `oma --stop-export-server` signal a process group or every process, and a
  // float converted to an int out of its range is undefined behaviour.
  auto integer = [&](const char* name, int64_t min, int64_t max) {
    auto it = j.find(name);
    if (it == j.end() || !it->is_number_integer()) throw Error(fmt::format("\"{}\" is not an integer", name));
    // nlohmann holds a literal without a sign as unsigned: compare each kind in its own type.
    bool in_range = it->is_number_unsigned()
                        ? it->get<uint64_t>() <= static_cast<uint64_t>(max) &&
                              (min <= 0 || it->get<uint64_t>() >= static_cast<uint64_t>(min))
                        : it->get<int64_t>() >= min && it->get<int64_t>() <= max;
    if (!in_range) {
      throw Error(fmt::format("\"{}\" is out of range ({}..{})", name, min, max));
    }
    return it->get<int64_t>();
  };
  KeptServerRecord r;
  r.pid = static_cast<pid_t>(integer("pid", 2, std::numeric_limits<pid_t>::max()));
  r.port = static_cast<int>(integer("port", 0, 65535));
  auto argv = j.find("argv");
  if (argv == j.end() || !argv->is_array() || argv->empty()) throw Error("\"argv\" is not a non-empty list");
  for (const auto& a : *argv) {
    if (!a.is_string()) throw Error("\"argv\" holds something other than strings");
    r.argv.push_back(a.get<std::string>());
  }
  // Port 0 only for a server on a Unix socket: a TCP record needs its port.
  if (r.port == 0 && unix_socket_of(r.argv).empty()) throw Error("\"port\" is 0 for a server that listens on TCP");
  return r;
}

void write_kept_server_record(const std::string& path, const KeptServerRecord& record) {
  std::string text = nlohmann::json{{"pid", record.pid}, {"port", record.port}, {"argv", record.argv}}.dump() + "\n";
  try {
    write_private_file(path, text);
  } catch (const Error& e) {
    throw Error(fmt::format("cannot record the export server (pid {}): {}", record.pid, e.what()));
  }
}

std::string adoption_refusal(const KeptServerRecord& record, const std::vector<std::string>& expected_argv,
                             const std::string& address) {
  if (record.pid <= 0) return "the record holds no PID";
  int pidfd = open_pidfd(record.pid);
  bool alive = pid_alive(record.pid, pidfd);
  std::string cmdline = alive ? read_cmdline(record.pid) : "";
  if (pidfd >= 0) ::close(pidfd);
  if (!alive) return fmt::format("pid {} is not running", record.pid);
  if (cmdline != joined_cmdline(expected_argv)) {
    std::string shown = cmdline;
    std::replace(shown.begin(), shown.end(), '\0', ' ');
    return fmt::format("pid {} runs '{}', not the export server this configuration runs", record.pid, shown);
  }
  if (std::string sock = unix_socket_of(record.argv); !sock.empty()) {
    if (!accepts_unix(sock)) return fmt::format("nothing accepts connections on {}", sock);
    return "";
  }
  if (!owns_listener(record.pid, record.port) || !accepts_tcp(client_address(address), record.port)) {
    return fmt::format("pid {} is not what accepts connections on {}:{}", record.pid, address, record.port);
  }
  return "";
}

std::string kept_servers_dir(const std::string& record_path) {
  std::string base = record_path;
  if (base.size() > 5 && base.compare(base.size() - 5, 5, ".json") == 0) base.resize(base.size() - 5);
  return base + ".d";
}

std::string stop_kept_export_server(const std::string& record_path) {
  std::string result = stop_one_kept_server(record_path);
  // The servers behind it (per-VMA nbdkits behind the NBD router), if any.
  std::error_code ec;
  std::vector<std::string> behind;
  for (const auto& e : fs::directory_iterator(kept_servers_dir(record_path), ec))
    if (e.path().extension() == ".json") behind.push_back(e.path().string());
  std::sort(behind.begin(), behind.end());
  for (const auto& r : behind) result += "; " + stop_one_kept_server(r);
  return result;
}

std::string stop_one_kept_server(const std::string& record_path, std::chrono::milliseconds grace) {
  auto record = read_kept_server_record(record_path);
  if (!record) return fmt::format("no kept export server is recorded in {}", record_path);
  int pidfd = open_pidfd(record->pid);
  std::string result;
  if (!pid_alive(record->pid, pidfd)) {
    result = fmt::format("the recorded export server (pid {}) is not running", record->pid);
  } else if (read_cmdline(record->pid) != joined_cmdline(record->argv)) {
    result = fmt::format("pid {} no longer runs the recorded export server: left alone", record->pid);
  } else {
    ::kill(record->pid, SIGTERM);
    for (int i = 0; i < grace.count() / 10 && pid_alive(record->pid, pidfd); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (pid_alive(record->pid, pidfd)) {
      ::kill(record->pid, SIGKILL);
      for (int i = 0; i < 500 && pid_alive(record->pid, pidfd); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_alive(record->pid, pidfd)) {
      if (pidfd >= 0) ::close(pidfd);
      throw Error(fmt::format("the export server (pid {}) did not exit after SIGKILL", record->pid));
    }
    result = fmt::format("stopped the export server (pid {})", record->pid);
  }
  if (pidfd >= 0) ::close(pidfd);
  ::unlink(record_path.c_str());
  return result;
}

std::string client_address(const std::string& listen_address) {
  return listen_address == "0.0.0.0" || listen_address.empty() ? "127.0.0.1" : listen_address;
}

void wait_for_listen(const std::string& address, int port, const std::function<std::optional<std::string>()>& ended,
                     const std::string& what, const std::string& log_path, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (accepts_tcp(client_address(address), port)) return;
    if (auto how = ended()) {
      throw Error(fmt::format("{} {} before listening on {}:{} (port taken?); its log {}:\n{}", what, *how, address,
                              port, log_path, log_tail(log_path)));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw Error(fmt::format("{} did not listen on {}:{} within {} ms; its log {}:\n{}", what, address, port,
                              timeout.count(), log_path, log_tail(log_path)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

std::string default_written_filter_path() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "lib/migratekit/nbdkit-written-filter.so";
  return (exe.parent_path().parent_path() / "lib" / "migratekit" / "nbdkit-written-filter.so").string();
}

NbdkitExportServer::NbdkitExportServer(ExportServerConfig config) : config_(std::move(config)) {
  if (router()) {
    if (config_.router_binary.empty()) config_.router_binary = default_nbd_router_path();
    std::error_code ec;
    if (!fs::is_regular_file(config_.router_binary, ec))
      throw UsageError(fmt::format("the NBD router {} is missing: the OMA needs it in front of the VMAs' NBD servers "
                                   "(build the target migratekit-nbd-router, or reinstall migratekit-oma)",
                                   config_.router_binary));
    return;
  }
  bool plain = config_.tls.psk_file.empty() && config_.tls.certificates_dir.empty();
  if (!config_.tls.psk_file.empty() && !config_.tls.certificates_dir.empty()) {
    throw UsageError("the NBD export server takes a PSK keys file or an X.509 certificates directory, not both");
  }
  if (plain && !on_unix_socket()) {
    throw UsageError("the NBD export server needs TLS on a TCP port: give a PSK keys file or an X.509 certificates "
                     "directory");
  }
  std::error_code ec;
  fs::create_directories(config_.exports_dir, ec);
  if (ec) throw Error(fmt::format("cannot create the exports directory {}: {}", config_.exports_dir, ec.message()));
  if (config_.written_dir.empty()) config_.written_dir = config_.exports_dir + "-written";
  config_.written_dir = fs::absolute(config_.written_dir).lexically_normal().string();  // the filter wants it absolute
  fs::create_directories(config_.written_dir, ec);
  if (ec) throw Error(fmt::format("cannot create the written-bytes directory {}: {}", config_.written_dir, ec.message()));
  if (config_.written_filter.empty()) config_.written_filter = default_written_filter_path();
  if (!fs::is_regular_file(config_.written_filter, ec)) {
    throw UsageError(fmt::format("the export server's written-bytes filter {} is missing: the OMA needs it to check "
                                 "what a VMA reports (build the target nbdkit-written-filter, or reinstall "
                                 "migratekit-oma)",
                                 config_.written_filter));
  }
}

std::optional<uint64_t> NbdkitExportServer::written_bytes(const std::string& export_name) const {
  if (!is_export_name(export_name)) throw UsageError(fmt::format("'{}' is not an export name", export_name));
  std::string path = config_.written_dir + "/" + export_name + ".written";
  std::ifstream in(path);
  if (!in) return uint64_t{0};  // nothing was ever flushed on this export
  std::string text(std::istreambuf_iterator<char>(in), {});
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end == text.data() || (end != text.data() + text.size() && *end != '\n')) {
    throw Error(fmt::format("export {}: the written-bytes count {} is unreadable ('{}'): the VMA's reports on this "
                            "export cannot be checked; move the file away and run the pass again",
                            export_name, path, text.substr(0, 40)));
  }
  return value;
}

NbdkitExportServer::~NbdkitExportServer() { stop(); }

std::vector<std::string> NbdkitExportServer::argv() const {
  if (router()) {
    std::vector<std::string> a = {config_.router_binary, "--listen", config_.listen_address, "--port",
                                  std::to_string(config_.port), "--sockets", config_.router_sockets_dir};
    if (!config_.router_tls_certificates_dir.empty())
      a.insert(a.end(), {"--tls-certificates", config_.router_tls_certificates_dir});
    return a;
  }
  std::vector<std::string> a = {"nbdkit", "-f"};
  if (on_unix_socket()) a.insert(a.end(), {"-U", config_.unix_socket});
  else a.insert(a.end(), {"-i", config_.listen_address, "-p", std::to_string(config_.port)});
  if (!config_.tls.psk_file.empty()) a.insert(a.end(), {"--tls=require", "--tls-psk=" + config_.tls.psk_file});
  else if (!config_.tls.certificates_dir.empty())
    a.insert(a.end(), {"--tls=require", "--tls-certificates=" + config_.tls.certificates_dir});
  // else: plain NBD on a Unix socket in a 0700 directory, behind the X.509 router.
  if (config_.tls.verify_peer) a.push_back("--tls-verify-peer");
  a.push_back("--filter=" + config_.written_filter);  // the written-bytes filter: an option, before the plugin
  a.insert(a.end(), {"file", "dir=" + config_.exports_dir});
  a.push_back("written-dir=" + config_.written_dir);  // the filter's parameter
  if (!config_.lease_file.empty()) a.push_back("lease-file=" + config_.lease_file);  // writes bound to the lease
  return a;
}

void NbdkitExportServer::launch() {
  if (config_.keep_running) {
    if (pidfd_ >= 0) ::close(pidfd_);
    SpawnOptions opt;
    opt.stdout_path = config_.log_path;
    opt.stderr_path = config_.log_path;
    if (on_unix_socket()) ::unlink(config_.unix_socket.c_str());  // a dead server's socket
    pid_t pid = Subprocess::spawn_detached(argv(), opt);
    pidfd_ = open_pidfd(pid);
    pid_ = pid;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (on_unix_socket() ? !accepts_unix(config_.unix_socket)
                  : !owns_listener(pid, config_.port) || !accepts_tcp(client_address(config_.listen_address), config_.port)) {
      if (!pid_alive(pid, pidfd_)) {
        throw Error(fmt::format("{} (pid {}) exited before listening on {}; its log {}:\n{}",
                                router() ? "the NBD router" : "nbdkit (exports)", pid,
                                on_unix_socket() ? config_.unix_socket
                                                 : fmt::format("{}:{} (port taken?)", config_.listen_address, config_.port),
                                config_.log_path, log_tail(config_.log_path)));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid, SIGKILL);
        throw Error(fmt::format("nbdkit (exports, pid {}) did not listen on {}:{} within 15 s; its log {}:\n{}", pid,
                                config_.listen_address, config_.port, config_.log_path, log_tail(config_.log_path)));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    write_kept_server_record(config_.record_path, {pid, config_.port, argv()});
    log::info("{} serving {} on {} (pid {}, kept running across OMA restarts; recorded in {})",
              router() ? "the NBD router" : "nbdkit", router() ? config_.router_sockets_dir : config_.exports_dir,
              on_unix_socket() ? config_.unix_socket : fmt::format("{}:{}", config_.listen_address, config_.port), pid,
              config_.record_path);
    return;
  }
  SpawnOptions opt;
  opt.stdout_path = config_.log_path;
  opt.stderr_path = config_.log_path;
  if (on_unix_socket()) ::unlink(config_.unix_socket.c_str());  // a dead server's socket
  process_ = Subprocess::spawn(argv(), opt);
  pid_ = process_.pid();
  auto ended = [this]() -> std::optional<std::string> {
    if (process_.running()) return std::nullopt;
    return fmt::format("exited (status {})", process_.exit_status().value_or(-1));
  };
  if (on_unix_socket()) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!accepts_unix(config_.unix_socket)) {
      if (auto how = ended())
        throw Error(fmt::format("nbdkit ({}) {} before listening; its log {}:\n{}", config_.unix_socket, *how,
                                config_.log_path, log_tail(config_.log_path)));
      if (std::chrono::steady_clock::now() > deadline)
        throw Error(fmt::format("nbdkit did not listen on {} within 15 s; its log {}:\n{}", config_.unix_socket,
                                config_.log_path, log_tail(config_.log_path)));
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    log::info("nbdkit serving {} on {} (pid {})", config_.exports_dir, config_.unix_socket, process_.pid());
    return;
  }
  wait_for_listen(config_.listen_address, config_.port, ended, "nbdkit (exports)", config_.log_path,
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

bool NbdkitExportServer::try_adopt() {
  auto record = read_kept_server_record(config_.record_path);
  if (!record) {
    log::info("no kept export server recorded in {}: starting one", config_.record_path);
    return false;
  }
  ExportServerConfig wanted = config_;
  if (wanted.port == 0) wanted.port = record->port;  // port 0 means "keep the one chosen before"
  std::swap(config_, wanted);
  std::string refusal = adoption_refusal(*record, argv(), config_.listen_address);
  if (!refusal.empty()) {
    std::swap(config_, wanted);
    log::warn("not adopting the recorded export server: {}; starting a new one", refusal);
    return false;
  }
  pidfd_ = open_pidfd(record->pid);
  pid_ = record->pid;
  adopted_ = true;
  log::info("adopted the running {} (pid {}) on {}: copies into the exports go on",
            router() ? "NBD router" : "export server nbdkit", record->pid,
            on_unix_socket() ? config_.unix_socket : fmt::format("{}:{}", config_.listen_address, config_.port));
  return true;
}

bool NbdkitExportServer::server_alive() {
  return config_.keep_running ? pid_alive(pid_.load(), pidfd_) : process_.running();
}

void NbdkitExportServer::start() {
  std::lock_guard lock(mu_);
  if (supervisor_.joinable()) return;
  stopping_ = false;
  if (config_.keep_running) {
    if (config_.record_path.empty()) throw UsageError("keeping the export server running needs a record path");
    if (try_adopt()) {
      supervisor_ = std::thread([this] { supervise(); });
      return;
    }
  }
  if (on_unix_socket() || config_.port != 0) {
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
        process_.stop();  // a kept server that did not listen has exited or was killed
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
    if (stopping_ || server_alive()) continue;
    if (config_.keep_running) {
      log::warn("nbdkit (pid {}, kept) exited: restarting it; exports are files and survive", pid_.load());
    } else {
      log::warn("nbdkit (pid {}) exited with status {}: restarting it; exports are files and survive",
                process_.pid(), process_.exit_status().value_or(-1));
    }
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

bool NbdkitExportServer::end_supervision() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (supervisor_.joinable()) supervisor_.join();
  std::lock_guard lock(mu_);
  if (pidfd_ < 0) return false;
  ::close(pidfd_);
  pidfd_ = -1;
  return true;
}

void NbdkitExportServer::stop() {
  bool watched_kept_server = end_supervision();
  std::lock_guard lock(mu_);
  if (config_.keep_running) {
    // Left running on purpose: the next OMA start adopts it.
    if (watched_kept_server)
      log::info("export server nbdkit (pid {}) left running for the next OMA start", pid_.load());
    return;
  }
  process_.stop();
}

void NbdkitExportServer::terminate() {
  end_supervision();
  std::lock_guard lock(mu_);
  if (config_.keep_running) {
    // nbdkit waits for its open connections after SIGTERM: they are what must end now.
    if (fs::exists(config_.record_path))
      log::info("{}", stop_one_kept_server(config_.record_path, std::chrono::milliseconds(200)));
  } else {
    process_.stop(std::chrono::milliseconds(200));
  }
  if (on_unix_socket()) ::unlink(config_.unix_socket.c_str());
  pid_ = -1;
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

void NbdkitExportServer::cut_off(const std::vector<std::string>& export_names) {
  for (const auto& e : export_names) unpublish(e);  // first: a client that reconnects finds nothing
  std::lock_guard lock(mu_);  // the supervisor waits: it must not restart the old server
  if (stopping_) throw Error(fmt::format("the export server is stopping: cannot cut off {}", fmt::join(export_names, ", ")));
  pid_t old = pid_.load();
  relaunch();
  log::warn("export server restarted (pid {} -> {}) to close the connections of {}: other exports' clients reconnect",
            old, pid_.load(), fmt::join(export_names, ", "));
}

void NbdkitExportServer::relaunch() {
  if (config_.keep_running) {
    stop_one_kept_server(config_.record_path);
  } else {
    process_.stop();
  }
  launch();
}

Endpoint NbdkitExportServer::endpoint(const std::string& export_name) const {
  Endpoint e;
  bool tls = !config_.tls.psk_file.empty() || !config_.tls.certificates_dir.empty();
  if (on_unix_socket())
    e.uri = fmt::format("{}:///{}?socket={}", tls ? "nbds+unix" : "nbd+unix", export_name, config_.unix_socket);
  else e.uri = fmt::format("nbds://{}:{}/{}", client_address(config_.listen_address), config_.port, export_name);
  e.tls.psk_file = config_.tls.psk_file;
  e.tls.certificates_dir = config_.tls.certificates_dir;
  e.role = "export";
  return e;
}

}  // namespace mk::oma
