// The copy pipeline's view of its source and target: requests started asynchronously
// and a wait during which they complete (libnbd's copy/ "rw" operations are the model).
//
// A request is a plain struct owned by whoever submits it; the transport only carries
// it. Reads go to the source; writes, write-zeroes and flushes to the target. What lies
// behind (libnbd connections, reconnecting after failures, a test double) is the
// transport's business: the pipeline above never knows. A transport is driven from one
// thread.
#pragma once

#include <chrono>
#include <cstdint>

namespace mk::engine {

using Clock = std::chrono::steady_clock;

enum class IoKind : uint8_t { Read, Write, Zero, Flush };

// "read", "write", "write-zeroes", "flush": for messages.
constexpr const char* io_kind_name(IoKind kind) {
  switch (kind) {
    case IoKind::Read: return "read";
    case IoKind::Write: return "write";
    case IoKind::Zero: return "write-zeroes";
    case IoKind::Flush: return "flush";
  }
  return "request";
}

// One request. The submitter keeps it alive and unchanged until on_done ran.
struct IoRequest {
  IoKind kind = IoKind::Read;
  void* buf = nullptr;   // Read: filled; Write: sent; unused by Zero and Flush
  uint64_t length = 0;   // unused by Flush
  uint64_t offset = 0;   // unused by Flush
  int error = 0;         // set before on_done runs: 0, or the errno of the failure
  void (*on_done)(IoRequest& request) = nullptr;
  void* owner = nullptr;  // the submitter's, for on_done
};

class CopyTransport {
 public:
  virtual ~CopyTransport() = default;

  // Starts `request`. Its on_done runs later, inside wait(), never inside submit().
  virtual void submit(IoRequest& request) = 0;

  // Lets requests progress for up to `timeout_ms` and runs on_done for those that
  // completed (on_done may submit more). Throws mk::Error when the copy cannot go on.
  virtual void wait(int timeout_ms) = 0;
};

}  // namespace mk::engine
