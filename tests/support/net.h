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

// `count` consecutive loopback TCP ports held for one test: for a server that assigns
// port after port from a base (the OMA's tunnel ports), where "the port after a free
// one" is not free by chance. The block lies below the kernel's ephemeral range, so
// neither free_tcp_port() nor an outgoing connection is given one of its ports, and a
// lock file per block (flock, released when the object dies, also if the process is
// killed) keeps concurrent tests out of each other's blocks. Every port was bindable
// when the block was taken. Not copyable; owned by the test or its fixture.
class PortBlock {
 public:
  explicit PortBlock(int count);
  ~PortBlock();
  PortBlock(const PortBlock&) = delete;
  PortBlock& operator=(const PortBlock&) = delete;

  int first() const { return first_; }
  int count() const { return count_; }

 private:
  int first_ = 0;
  int count_ = 0;
  int lock_fd_ = -1;
};

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
