#include "common/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/log.h"

namespace mk {

bool notify_service_manager(std::string_view state) {
  const char* socket_name = std::getenv("NOTIFY_SOCKET");
  if (!socket_name || !*socket_name) return false;
  std::string name = socket_name;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if ((name[0] != '/' && name[0] != '@') || name.size() >= sizeof addr.sun_path) {
    log::warn("NOTIFY_SOCKET '{}' is not a socket path or @abstract name: systemd is not told '{}'", name, state);
    return false;
  }
  std::memcpy(addr.sun_path, name.data(), name.size());
  if (name[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  socklen_t len = offsetof(sockaddr_un, sun_path) + name.size();
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  bool sent = fd >= 0 && ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
                                  len) == static_cast<ssize_t>(state.size());
  int err = errno;
  if (fd >= 0) ::close(fd);
  if (!sent) log::warn("cannot tell systemd '{}' through {}: {}", state, name, std::strerror(err));
  return sent;
}

}  // namespace mk
