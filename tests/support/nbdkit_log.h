// Reading the request log of nbdkit's log filter (--filter=log logfile=FILE), so that a
// test can check what a client really sent: which reads, writes, write-zeroes and
// flushes, at which offsets, on which connection, and whether they succeeded.
//
// Free functions on a log file that the server has finished writing to for the
// requests of interest (nbdkit logs a request's result before replying to it).
// Thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mk::test {

struct NbdRequest {
  std::string type;      // "Read", "Write", "Zero", "Trim", "Flush", "Extents", "Cache"
  uint64_t connection = 0;
  uint64_t id = 0;
  uint64_t offset = 0;   // 0 for Flush
  uint64_t count = 0;    // 0 for Flush
  bool replied = false;  // the server has answered it (the log holds its result)
  bool ok = false;       // ... with success
  uint64_t end() const { return offset + count; }
};

// Requests in the order the server received them. Throws mk::Error if unreadable.
std::vector<NbdRequest> parse_nbdkit_log(const std::string& path);

// The requests of one type.
std::vector<NbdRequest> requests_of(const std::vector<NbdRequest>& all, const std::string& type);

// Whether the log holds a request of `type` that the server answered with an error.
bool has_failed_request(const std::string& path, const std::string& type);

// Sum of `count` over the given requests.
uint64_t total_count(const std::vector<NbdRequest>& requests);

}  // namespace mk::test
