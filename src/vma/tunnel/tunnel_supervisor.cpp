#include "vma/tunnel/tunnel_supervisor.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/log.h"
#include "common/subprocess.h"

namespace mk::vma {
namespace {

constexpr const char* kUpLine = "forwarding_success: all expected forwarding replies received";

std::string read_from(const std::string& path, uint64_t offset) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(static_cast<std::streamoff>(offset));
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

bool contains(const std::string& text, const char* what) { return text.find(what) != std::string::npos; }

}  // namespace

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::vector<std::string> ssh_command(const TunnelConfig& c) {
  std::vector<std::string> argv = {
      c.ssh_binary, "-N", "-T", "-v",
      "-F", "/dev/null",  // no user or system ssh_config can loosen what follows
      "-p", std::to_string(c.ssh_port),
      "-l", c.ssh_user,
      "-i", c.identity_file,
      "-o", "IdentitiesOnly=yes",
      "-o", "IdentityAgent=none",
      "-o", "BatchMode=yes",
      "-o", "PasswordAuthentication=no",
      "-o", "KbdInteractiveAuthentication=no",
      "-o", "StrictHostKeyChecking=yes",
      "-o", "UserKnownHostsFile=" + c.known_hosts_file,
      "-o", "GlobalKnownHostsFile=/dev/null",
      "-o", "HostKeyAlias=" + c.host_key_alias,
      "-o", "CheckHostIP=no",
      "-o", "UpdateHostKeys=no",
      "-o", "ExitOnForwardFailure=yes",
      "-o", fmt::format("ServerAliveInterval={}", c.keepalive_interval_s),
      "-o", fmt::format("ServerAliveCountMax={}", c.keepalive_count),
      "-o", fmt::format("ConnectTimeout={}", c.connect_timeout_s),
      "-o", "ForwardAgent=no",
      "-o", "ForwardX11=no",
      "-o", "RequestTTY=no",
      // Bulk NBD data rides this connection. OpenSSH prefers ChaCha20-Poly1305, whose
      // Poly1305 is plain C; AES-GCM runs on AES-NI. "^" puts AES-GCM first and keeps
      // the default list behind it, so a server without it still connects.
      "-o", "Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com",
      "-R", fmt::format("{}:{}:127.0.0.1:{}", c.remote_address, c.remote_port, c.local_api_port),
  };
  if (c.nbd_local_port) {
    argv.push_back("-L");
    argv.push_back(fmt::format("127.0.0.1:{}:127.0.0.1:{}", *c.nbd_local_port, c.nbd_remote_port));
  }
  // "--": whatever the host, ssh never reads it as an option (it is checked when paired
  // too; this holds even for a state file written by hand).
  argv.push_back("--");
  argv.push_back(c.ssh_host);
  return argv;
}

std::string explain_ssh_failure(const std::string& log_text) {
  // ssh's own messages (not its debug lines), last one first: that is why it exited.
  std::vector<std::string> lines;
  std::istringstream in(log_text);
  for (std::string l; std::getline(in, l);) {
    if (!l.empty() && l.back() == '\r') l.pop_back();
    if (l.empty() || l.rfind("debug", 0) == 0 || l.rfind("OpenSSH_", 0) == 0 || l.rfind("Authenticated to", 0) == 0 ||
        l.rfind("Transferred:", 0) == 0 || l.rfind("Bytes per second", 0) == 0 || l.rfind("Warning: Permanently", 0) == 0)
      continue;
    lines.push_back(l);
  }
  if (lines.empty()) return "";
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  std::string reason = lines.back();
  if (contains(all, "Host key verification failed") || contains(all, "REMOTE HOST IDENTIFICATION HAS CHANGED") ||
      contains(all, "No ED25519 host key is known") || contains(all, "host key is known"))
    return "the OMA's SSH host key does not match the key pinned at pairing (" + reason +
           "): if the OMA was reinstalled, pair again with a new bundle; otherwise something else answers on "
           "the OMA's address";
  if (contains(all, "Permission denied"))
    return "the OMA refused this VMA's key (" + reason +
           "): an operator must approve the VMA on the OMA (POST /api/v1/vmas/{id}/approve), or it was revoked";
  if (contains(all, "forwarding failed"))
    return "the OMA refused the tunnel's forward (" + reason +
           "): the port assigned at pairing is taken on the OMA or not the one this VMA was approved for";
  if (contains(all, "not responding"))
    return "the OMA stopped answering keep-alives (" + reason + "): the network path or the OMA hangs";
  if (contains(all, "Connection refused") || contains(all, "Connection timed out") || contains(all, "No route") ||
      contains(all, "Could not resolve"))
    return "cannot reach the OMA's SSH server (" + reason + "): check the OMA address, port and firewall";
  return reason;
}

TunnelSupervisor::TunnelSupervisor(TunnelConfig config)
    : config_(std::move(config)), state_{protocol::TunnelState::Down, unix_now(), std::nullopt}, backoff_(config_.backoff_initial) {
  if (config_.ssh_host.empty() || config_.identity_file.empty() || config_.known_hosts_file.empty())
    throw UsageError("tunnel: the OMA's SSH host, the VMA's key file and the pinned known_hosts file are required "
                     "(run `vma pair` first)");
  if (config_.log_path.empty()) throw UsageError("tunnel: a log path for ssh is required");
}

TunnelSupervisor::~TunnelSupervisor() { stop(); }

void TunnelSupervisor::start() {
  std::lock_guard lk(mutex_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { run(); });
}

void TunnelSupervisor::stop() {
  {
    std::lock_guard lk(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

protocol::TunnelHealth TunnelSupervisor::state() const {
  std::lock_guard lk(mutex_);
  return state_;
}

void TunnelSupervisor::set_state(protocol::TunnelState state, std::optional<std::string> error) {
  std::lock_guard lk(mutex_);
  if (state_.state != state) state_.since = unix_now();
  state_.state = state;
  state_.error = std::move(error);
}

bool TunnelSupervisor::wait_or_stop(std::chrono::milliseconds d) {
  std::unique_lock lk(mutex_);
  return !cv_.wait_for(lk, d, [this] { return stopping_; });
}

void TunnelSupervisor::run() {
  for (;;) {
    {
      std::lock_guard lk(mutex_);
      if (stopping_) break;
    }
    bool was_up = false;
    try {
      was_up = run_once();
    } catch (const std::exception& e) {
      set_state(protocol::TunnelState::Down, std::string("cannot start ssh: ") + e.what());
    }
    std::chrono::milliseconds delay;
    {
      std::lock_guard lk(mutex_);
      if (stopping_) break;
      if (was_up) backoff_ = config_.backoff_initial;
      delay = backoff_;
      backoff_ = std::min(backoff_ * 2, config_.backoff_max);
    }
    log::info("tunnel to {}:{} down ({}); reconnecting in {} ms", config_.ssh_host, config_.ssh_port,
              state().error.value_or("ssh exited"), delay.count());
    if (!wait_or_stop(delay)) break;
  }
  set_state(protocol::TunnelState::Down, std::string("tunnel stopped"));
}

bool TunnelSupervisor::run_once() {
  set_state(protocol::TunnelState::Connecting, std::nullopt);
  {
    // Each attempt starts a fresh log; ssh appends, so truncating it later is safe.
    int fd = ::open(config_.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) throw Error(fmt::format("cannot write ssh's log {}: {}", config_.log_path, std::strerror(errno)));
    ::close(fd);
  }
  SpawnOptions so;
  so.stdout_path = config_.log_path;
  so.stderr_path = config_.log_path;
  so.append = true;
  // Its own session: under the kernel's autogroup scheduling (sessions share the CPU
  // fairly), ssh encrypting the NBD traffic in the VMA's session took its CPU from the
  // VMA's copy and readers. On 2 cores with the OMA beside it, a pass through SSH took
  // 1.11-1.14x `migratekit copy` on the same forward (twice the context switches in
  // ssh and sshd); with ssh and the readers in sessions of their own, 1.06x, its copy
  // phase as long as that whole command. It still dies with the VMA (parent-death
  // signal), and the VMA stops it by PID.
  so.own_session = true;
  Subprocess ssh = Subprocess::spawn(ssh_command(config_), so);
  pid_.store(ssh.pid());
  attempts_++;
  log::info("tunnel: ssh (pid {}) connecting to {}@{}:{} for OMA {}:{} -> 127.0.0.1:{}", ssh.pid(),
            config_.ssh_user, config_.ssh_host, config_.ssh_port, config_.remote_address, config_.remote_port,
            config_.local_api_port);
  bool up = false;
  uint64_t offset = 0;
  std::string pending;  // unread tail that may hold half a line
  while (ssh.running()) {
    if (!wait_or_stop(std::chrono::milliseconds(50))) {
      ssh.stop();
      pid_.store(-1);
      return up;
    }
    std::string fresh = read_from(config_.log_path, offset);
    offset += fresh.size();
    if (!up) {
      pending += fresh;
      if (contains(pending, kUpLine)) {
        up = true;
        pending.clear();
        set_state(protocol::TunnelState::Up, std::nullopt);
        log::info("tunnel up: OMA {} ({}:{}) {}:{} reaches this VMA's API", config_.host_key_alias, config_.ssh_host,
                  config_.ssh_port, config_.remote_address, config_.remote_port);
      } else if (pending.size() > 4096) {
        pending.erase(0, pending.size() - 4096);
      }
    } else if (offset > config_.log_max_bytes) {
      // Up for long: ssh logs every forwarded connection; keep the file bounded.
      if (::truncate(config_.log_path.c_str(), 0) == 0) offset = 0;
    }
  }
  pid_.store(-1);
  int status = ssh.exit_status().value_or(-1);
  std::string why = explain_ssh_failure(read_from(config_.log_path, 0));
  if (why.empty()) why = fmt::format("ssh exited with status {} (log: {})", status, config_.log_path);
  set_state(protocol::TunnelState::Down, why);
  return up;
}

}  // namespace mk::vma
