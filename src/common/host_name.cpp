#include "common/host_name.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <string>

namespace mk {
namespace {

bool is_label(std::string_view l) {
  if (l.empty() || l.size() > 63 || l.front() == '-' || l.back() == '-') return false;
  for (char c : l) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

bool is_ip_literal(std::string_view s) {
  if (s.empty() || s.size() > 45) return false;
  std::string z(s);  // inet_pton wants a NUL-terminated string
  unsigned char buf[16];
  return ::inet_pton(AF_INET, z.c_str(), buf) == 1 || ::inet_pton(AF_INET6, z.c_str(), buf) == 1;
}

bool is_host_name(std::string_view s) {
  if (s.empty() || s.size() > 253) return false;
  // "10.0.0.256" or "1.2.3" would pass as labels but are mistyped addresses.
  if (s.find_first_not_of("0123456789.") == std::string_view::npos) return is_ip_literal(s);
  for (size_t start = 0;;) {
    size_t dot = s.find('.', start);
    size_t len = dot == std::string_view::npos ? std::string_view::npos : dot - start;
    if (!is_label(s.substr(start, len))) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool is_host_name_or_ip(std::string_view s) { return is_host_name(s) || is_ip_literal(s); }

std::pair<std::string, int> socket_address(const sockaddr_storage& ss) {
  char host[INET6_ADDRSTRLEN] = "";
  int port = 0;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
      inet_ntop(AF_INET, &a->sin6_addr.s6_addr[12], host, sizeof host);
    } else {
      inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    }
    port = ntohs(a->sin6_port);
  }
  return {host, port};
}

}  // namespace mk
