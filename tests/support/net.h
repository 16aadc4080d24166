// Network helpers for tests that start real servers: a free TCP port on loopback, and
// waiting until a server accepts connections.
//
// Free functions, thread-safe. free_tcp_port() is inherently racy (another process may
// take the port before the server binds it), so launchers retry on a bind failure.
#pragma once

#include <chrono>
#include <string>

#include "common/subprocess.h"

namespace mk::test {

// A port on 127.0.0.1 that was free a moment ago (bind port 0, read it, close).
int free_tcp_port();

// What is being waited for, so that a failure names it: the server's name, its log file
// (its tail goes into the message) and its process (a dead process fails at once).
struct ServerWatch {
  std::string name;              // "nbdkit (file plugin)"
  std::string log_path;          // "" if none
  mk::Subprocess* process = nullptr;
};

// Connect loop until the server accepts, the process exits or the timeout passes.
// Throws mk::Error naming the server, the address, its exit status and its log tail.
void wait_for_unix_socket(const std::string& path, const ServerWatch& watch,
                          std::chrono::milliseconds timeout = std::chrono::seconds(15));
void wait_for_tcp_port(int port, const ServerWatch& watch,
                       std::chrono::milliseconds timeout = std::chrono::seconds(15));

// The last `max_bytes` of a log file ("" if unreadable), for error messages.
std::string log_tail(const std::string& path, size_t max_bytes = 2000);

}  // namespace mk::test
