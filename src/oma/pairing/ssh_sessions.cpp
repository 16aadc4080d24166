#include "oma/pairing/ssh_sessions.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "common/log.h"

namespace mk::oma {
namespace {

// Inodes of sockets listening on 127.0.0.1:port ("0100007F:PPPP", state 0A).
std::set<std::string> listening_inodes(int port) {
  std::set<std::string> out;
  std::ifstream in("/proc/net/tcp");
  std::string line;
  std::getline(in, line);  // header
  uint32_t loopback = htonl(INADDR_LOOPBACK);
  std::string want = fmt::format("{:08X}:{:04X}", loopback, port);
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sl, local, remote, state, queues, timer, retrans, uid, timeout, inode;
    f >> sl >> local >> remote >> state >> queues >> timer >> retrans >> uid >> timeout >> inode;
    if (local == want && state == "0A" && !inode.empty() && inode != "0") out.insert(inode);
  }
  return out;
}

bool is_sshd(pid_t pid) {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink(fmt::format("/proc/{}/exe", pid), ec);
  // OpenSSH 9.8 and later serve sessions from a separate sshd-session binary.
  return !ec && (exe.filename() == "sshd" || exe.filename() == "sshd-session");
}

}  // namespace

std::vector<pid_t> loopback_listeners(int port) {
  std::set<std::string> inodes = listening_inodes(port);
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

std::optional<pid_t> tunnel_session_pid(int port) {
  for (pid_t pid : loopback_listeners(port))
    if (is_sshd(pid)) return pid;
  return std::nullopt;
}

std::optional<pid_t> end_tunnel_session(int port, std::chrono::milliseconds grace) {
  auto pid = tunnel_session_pid(port);
  if (!pid) return std::nullopt;
  log::info("ending the sshd session (pid {}) that holds the tunnel on 127.0.0.1:{}", *pid, port);
  ::kill(*pid, SIGTERM);
  auto deadline = std::chrono::steady_clock::now() + grace;
  while (std::chrono::steady_clock::now() < deadline) {
    if (listening_inodes(port).empty()) return pid;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Still listening: make sure it is the same sshd before the hard stop.
  if (tunnel_session_pid(port) == pid) ::kill(*pid, SIGKILL);
  return pid;
}

bool loopback_port_answers(int port, std::chrono::milliseconds timeout) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
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
