// Probes used while waiting for a child server (nbdkit, the NBD router) to start:
// whether it accepts connections yet, and the end of its log for the error message when
// it never does.
//
// Free functions, no state; thread-safe. A probe opens one connection and closes it at
// once: the server sees a client that went away before its handshake.
#pragma once

#include <cstddef>
#include <string>

namespace mk {

// True if something accepts TCP connections on address:port (an IPv4 literal).
bool accepts_tcp(const std::string& address, int port);

// True if something accepts connections on the Unix socket `path` (false for a path too
// long for sockaddr_un).
bool accepts_unix(const std::string& path);

// The last `max_bytes` of the file at `path`, prefixed by "..." when cut; "(no log)"
// for an empty path; "" for a file that cannot be read.
std::string log_tail(const std::string& path, size_t max_bytes = 1500);

}  // namespace mk
