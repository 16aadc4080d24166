#include "oma/pairing/ssh_sessions.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/log.h"

namespace mk::oma {
namespace {

struct Listener {
  std::string inode;
  uid_t uid = 0;  // the socket's owner
};

// Sockets listening on 127.0.0.1:port ("0100007F:PPPP", state 0A). /proc/self/net: the
// same as /proc/net, and still there under systemd's ProcSubset=pid.
std::vector<Listener> listeners(int port, const std::string& address = kTunnelAddress) {
  std::vector<Listener> out;
  std::ifstream in("/proc/self/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  in_addr addr{};
  if (::inet_pton(AF_INET, address.c_str(), &addr) != 1) return out;
  uint32_t loopback = addr.s_addr;  // as /proc prints it: the address's bytes read in host order
  std::string want = fmt::format("{:08X}:{:04X}", loopback, port);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, state, queues, timer, retrans, uid, timeout, inode;
    f >> sl >> local >> remote >> state >> queues >> timer >> retrans >> uid >> timeout >> inode;
    if (local == want && state == "0A" && !inode.empty() && inode != "0")
      out.push_back({inode, static_cast<uid_t>(std::stoul(uid))});
  }
  return out;
}

std::set<std::string> listening_inodes(int port, const std::string& address = kTunnelAddress) {
  std::set<std::string> out;
  for (const auto& l : listeners(port, address)) out.insert(l.inode);
  return out;
}

// Through syscall(): glibc 2.36's <sys/pidfd.h> lacks C linkage for C++.
int open_pidfd(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int signal_pidfd(int fd, int sig) { return static_cast<int>(::syscall(SYS_pidfd_send_signal, fd, sig, nullptr, 0)); }

std::string exe_name(pid_t pid) {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink(fmt::format("/proc/{}/exe", pid), ec);
  return ec ? std::string("?") : exe.string();
}

// The process's real, effective, saved and file-system uids (/proc/PID/status "Uid:").
std::vector<uid_t> uids_of(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) != 0) continue;
    std::istringstream f(line.substr(4));
    std::vector<uid_t> out;
    for (unsigned long u; f >> u;) out.push_back(static_cast<uid_t>(u));
    return out;
  }
  return {};
}

bool is_sshd(pid_t pid) {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink(fmt::format("/proc/{}/exe", pid), ec);
  // OpenSSH 9.8 and later serve sessions from a separate sshd-session binary.
  return !ec && (exe.filename() == "sshd" || exe.filename() == "sshd-session");
}

// Whether this process may read other users' undumpable processes' /proc/PID/fd.
bool has_sys_ptrace() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("CapEff:", 0) == 0) return (std::stoull(line.substr(7), nullptr, 16) >> 19) & 1;  // CAP_SYS_PTRACE
  }
  return false;
}

// "pid (name), ..." of the processes of `uid` whose /proc/PID/fd this process cannot read.
std::string uninspectable_processes(uid_t uid) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& p : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t pid = std::stoi(name);
    std::vector<uid_t> uids = uids_of(pid);
    if (uids.empty() || uids[0] != uid) continue;
    std::error_code ec2;
    std::filesystem::directory_iterator fds(p.path() / "fd", ec2);
    if (!ec2) continue;
    std::ifstream comm(p.path() / "comm");
    std::string command;
    std::getline(comm, command);
    out.push_back(fmt::format("{} ({})", pid, command));
    if (out.size() == 10) break;
  }
  return out.empty() ? std::string("none") : fmt::format("{}", fmt::join(out, ", "));
}

}  // namespace

const char* outcome_name(TunnelSessionEnd::Outcome o) {
  switch (o) {
    case TunnelSessionEnd::Outcome::Ended: return "ended";
    case TunnelSessionEnd::Outcome::NoSession: return "no-session";
    case TunnelSessionEnd::Outcome::Refused: return "refused";
    case TunnelSessionEnd::Outcome::Failed: break;
  }
  return "failed";
}

TunnelSessionEnd::Outcome parse_outcome(const std::string& name) {
  for (auto o : {TunnelSessionEnd::Outcome::Ended, TunnelSessionEnd::Outcome::NoSession,
                 TunnelSessionEnd::Outcome::Refused, TunnelSessionEnd::Outcome::Failed})
    if (name == outcome_name(o)) return o;
  throw Error(fmt::format("unknown tunnel-session outcome \"{}\"", name));
}

std::vector<pid_t> loopback_listeners(int port, const std::string& address) {
  std::set<std::string> inodes = listening_inodes(port, address);
  std::vector<pid_t> out;
  if (inodes.empty()) return out;
  std::error_code ec;
  for (const auto& p : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = p.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec2;
    for (const auto& fd : std::filesystem::directory_iterator(p.path() / "fd", ec2)) {
      std::error_code ec3;
      std::string target = std::filesystem::read_symlink(fd.path(), ec3);
      if (ec3 || target.rfind("socket:[", 0) != 0) continue;
      if (inodes.count(target.substr(8, target.size() - 9))) {
        out.push_back(std::stoi(name));
        break;
      }
    }
  }
  return out;
}

std::optional<pid_t> tunnel_session_pid(int port, const std::string& address) {
  for (pid_t pid : loopback_listeners(port, address))
    if (is_sshd(pid)) return pid;
  return std::nullopt;
}

std::optional<pid_t> end_tunnel_session(int port, std::chrono::milliseconds grace, const std::string& address) {
  auto pid = tunnel_session_pid(port, address);
  if (!pid) return std::nullopt;
  log::info("ending the sshd session (pid {}) that holds the tunnel on {}:{}", *pid, address, port);
  ::kill(*pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (listening_inodes(port, address).empty()) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Still listening: make sure it is the same sshd before the hard stop.
  if (tunnel_session_pid(port, address) == pid) ::kill(*pid, SIGKILL);
  return pid;
}

TunnelSessionEnd end_user_tunnel_session(int port, uid_t tunnel_uid, std::chrono::milliseconds grace) {
  using O = TunnelSessionEnd::Outcome;
  auto result = [&](O o, std::string message, std::optional<pid_t> pid = std::nullopt) {
    return TunnelSessionEnd{o, pid, std::move(message)};
  };
  if (port < 1 || port > 65535) return result(O::Refused, fmt::format("port {} is not a TCP port", port));
  std::vector<Listener> socks = listeners(port);
  if (socks.empty()) return result(O::NoSession, fmt::format("nothing listens on 127.0.0.1:{}", port));
  for (const auto& l : socks)
    if (l.uid != tunnel_uid)
      return result(O::Refused, fmt::format("the socket listening on 127.0.0.1:{} belongs to uid {}, not to the "
                                            "tunnel user (uid {}): left alone",
                                            port, l.uid, tunnel_uid));
  std::vector<pid_t> holders = loopback_listeners(port);
  if (holders.empty() && !has_sys_ptrace())
    return result(O::Failed, fmt::format("127.0.0.1:{} listens but no process holding it is visible here (the "
                                         "helper needs CAP_SYS_PTRACE to read other users' /proc/PID/fd)",
                                         port));
  if (holders.empty()) {
    // With CAP_SYS_PTRACE every sshd session is visible (they are not dumpable, so their
    // /proc/PID/fd is root's); what hides is a dumpable process of the user: not sshd.
    return result(O::Refused,
                  fmt::format("127.0.0.1:{} is held by a process this helper may not inspect, so not by an sshd "
                              "session of the tunnel user (uid {}); the user's other processes: {}: left alone",
                              port, tunnel_uid, uninspectable_processes(tunnel_uid)));
  }
  // Pin each process first (a pidfd names one process for good), then check it: a PID
  // that ends and is reused in between fails the checks or is never signalled.
  struct Pinned {
    pid_t pid;
    int fd;
  };
  std::vector<Pinned> pinned;
  auto close_all = [&] {
    for (auto& p : pinned) ::close(p.fd);
  };
  for (pid_t pid : holders) {
    int fd = open_pidfd(pid);
    if (fd < 0) {
      close_all();
      return result(O::Failed, fmt::format("pidfd_open({}) failed: {}", pid, std::strerror(errno)));
    }
    pinned.push_back({pid, fd});
    std::string exe = exe_name(pid);
    std::vector<uid_t> uids = uids_of(pid);
    bool sshd = is_sshd(pid);
    bool as_user = uids.size() == 4;
    for (uid_t u : uids) as_user = as_user && u == tunnel_uid;
    if (!sshd || !as_user) {
      close_all();
      return result(O::Refused,
                    fmt::format("127.0.0.1:{} is held by pid {} ({}, uids {}), which is not an sshd session of the "
                                "tunnel user (uid {}): left alone",
                                port, pid, exe, fmt::join(uids, "/"), tunnel_uid));
    }
  }
  // Still the same socket? (the checks above read /proc after pidfd_open)
  std::vector<pid_t> again = loopback_listeners(port);
  for (const auto& p : pinned) {
    if (std::find(again.begin(), again.end(), p.pid) == again.end()) {
      close_all();
      return result(O::NoSession, fmt::format("the session on 127.0.0.1:{} ended by itself", port));
    }
  }
  for (const auto& p : pinned) {
    log::info("ending the sshd session (pid {}, uid {}) that holds the tunnel on 127.0.0.1:{}", p.pid, tunnel_uid,
              port);
    if (signal_pidfd(p.fd, SIGTERM) != 0 && errno != ESRCH) {
      std::string why = std::strerror(errno);
      close_all();
      return result(O::Failed, fmt::format("cannot signal the sshd session (pid {}) on 127.0.0.1:{}: {} (the helper "
                                           "needs CAP_KILL)",
                                           p.pid, port, why));
    }
  }
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline && !listening_inodes(port).empty())
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  bool killed = false;
  if (!listening_inodes(port).empty()) {
    for (const auto& p : pinned) killed |= signal_pidfd(p.fd, SIGKILL) == 0;
  }
  pid_t first = pinned.front().pid;
  close_all();
  return result(O::Ended,
                fmt::format("the sshd session (pid {}) holding 127.0.0.1:{} was ended{}", first, port,
                            killed ? " (SIGKILL: it outlived SIGTERM)" : ""),
                first);
}

bool loopback_port_answers(int port, std::chrono::milliseconds timeout, const std::string& address) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) {
    ::close(fd);
    return false;
  }
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  if (!ok && errno == EINPROGRESS) {
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    ok = ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
         ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0;
  }
  ::close(fd);
  return ok;
}

}  // namespace mk::oma
