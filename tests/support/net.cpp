#include "support/net.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "common/error.h"

namespace mk::test {
namespace {

sockaddr_in loopback(int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

bool try_connect(int family, const sockaddr* addr, socklen_t len) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::connect(fd, addr, len) == 0;
  ::close(fd);
  return ok;
}

void wait_until(const std::function<bool()>& accepts, const std::string& address,
                const ServerWatch& watch, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (accepts()) return;
    if (watch.process && !watch.process->running()) {
      throw Error(fmt::format("{} exited (status {}) before listening on {}; its log {}:\n{}", watch.name,
                              watch.process->exit_status().value_or(-1), address, watch.log_path,
                              log_tail(watch.log_path)));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw Error(fmt::format("{} did not listen on {} within {} ms; its log {}:\n{}", watch.name, address,
                              timeout.count(), watch.log_path, log_tail(watch.log_path)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace

int free_tcp_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(fmt::format("free_tcp_port: socket: {}", std::strerror(errno)));
  sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(fmt::format("free_tcp_port: cannot bind 127.0.0.1:0: {}", std::strerror(e)));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

void wait_for_unix_socket(const std::string& path, const ServerWatch& watch, std::chrono::milliseconds timeout) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) {
    throw Error(fmt::format("Unix socket path too long ({} bytes): {} (use a shorter TMPDIR)", path.size(), path));
  }
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  wait_until([&] { return try_connect(AF_UNIX, reinterpret_cast<sockaddr*>(&a), sizeof a); },
             "unix:" + path, watch, timeout);
}

void wait_for_tcp_port(int port, const ServerWatch& watch, std::chrono::milliseconds timeout) {
  sockaddr_in a = loopback(port);
  wait_until([&] { return try_connect(AF_INET, reinterpret_cast<sockaddr*>(&a), sizeof a); },
             fmt::format("127.0.0.1:{}", port), watch, timeout);
}

std::string log_tail(const std::string& path, size_t max_bytes) {
  if (path.empty()) return "";
  std::ifstream in(path, std::ios::binary);
  if (!in) return "(no log)";
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > max_bytes ? "..." + s.substr(s.size() - max_bytes) : s;
}

}  // namespace mk::test
