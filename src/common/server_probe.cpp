#include "common/server_probe.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <sstream>

namespace mk {
namespace {

bool connects(int family, const sockaddr* address, socklen_t length) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::connect(fd, address, length) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

bool accepts_tcp(const std::string& address, int port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, address.c_str(), &a.sin_addr) != 1) return false;
  return connects(AF_INET, reinterpret_cast<sockaddr*>(&a), sizeof a);
}

bool accepts_unix(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) return false;
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return connects(AF_UNIX, reinterpret_cast<sockaddr*>(&a), sizeof a);
}

std::string log_tail(const std::string& path, size_t max_bytes) {
  if (path.empty()) return "(no log)";
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str();
  return s.size() > max_bytes ? "..." + s.substr(s.size() - max_bytes) : s;
}

}  // namespace mk
