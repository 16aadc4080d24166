#include "support/net.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
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

namespace {

// The low end of the kernel's ephemeral port range (ip_local_port_range).
int ephemeral_low() {
  std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
  int low = 32768;
  f >> low;
  return low;
}

bool port_bindable(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a = loopback(port);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

PortBlock::PortBlock(int count) : count_(count) {
  // Blocks are aligned to `count` between 20000 and the ephemeral range, tried from a
  // random one on, so that concurrent tests rarely even meet at a lock.
  const int low = 20000, high = ephemeral_low();
  const int blocks = (high - low) / count;
  if (count < 1 || blocks < 1) throw Error(fmt::format("PortBlock: no room for {} ports below {}", count, high));
  std::random_device rd;
  const int start = static_cast<int>(rd() % static_cast<unsigned>(blocks));
  std::string lock_dir = std::filesystem::temp_directory_path() / "mk-test-ports";
  std::filesystem::create_directories(lock_dir);
  for (int i = 0; i < blocks; ++i) {
    int first = low + ((start + i) % blocks) * count;
    int fd = ::open(fmt::format("{}/{}", lock_dir, first).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) throw Error(fmt::format("PortBlock: cannot open a lock file in {}: {}", lock_dir, std::strerror(errno)));
    bool all_free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    for (int p = first; all_free && p < first + count; ++p) all_free = port_bindable(p);
    if (all_free) {
      first_ = first;
      lock_fd_ = fd;
      return;
    }
    ::close(fd);
  }
  throw Error(fmt::format("PortBlock: no {} consecutive free loopback ports between {} and {}", count, low, high));
}

PortBlock::~PortBlock() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
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
