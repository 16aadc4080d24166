// Host names and IP literals as the appliances accept them from their configuration and
// from pairing bundles. Such a value ends up on a command line (ssh), in a URI
// (nbds://HOST:PORT/export) or in a URL, so a host is accepted only when no option
// parser, URI parser or shell could read it as more than a host: an RFC 1123 host name
// (labels of letters, digits and '-', never first or last in a label; 1-63 characters
// each, 253 in all; no trailing dot) or an IP address (IPv4 dotted quad, or IPv6
// without brackets or zone). Nothing accepted starts with '-'.
//
// Free functions; thread-safe.
#pragma once

#include <sys/socket.h>

#include <string>
#include <string_view>
#include <utility>

namespace mk {

bool is_ip_literal(std::string_view s);
bool is_host_name(std::string_view s);  // RFC 1123; an all-numeric dotted name must be an IPv4 address
bool is_host_name_or_ip(std::string_view s);

// The IP address (an IPv4-mapped IPv6 address as IPv4) and port of a socket address, for
// logs and per-client limits; "" and 0 for other families.
std::pair<std::string, int> socket_address(const sockaddr_storage& ss);

}  // namespace mk
