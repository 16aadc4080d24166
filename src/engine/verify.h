// Verification of a finished copy: reads the planned ranges from source and target and
// compares them byte for byte (zero ranges: the target must read as zeros).
//
// Comparison is exact (memcmp), which is both stronger and, here, cheaper than hashing
// the two streams: both sides' data passes through this process anyway.
#pragma once

#include <cstdint>

#include "common/error.h"
#include "engine/nbd_connection.h"
#include "engine/plan.h"
#include "engine/progress.h"

namespace mk::engine {

class VerifyMismatch : public Error {
 public:
  VerifyMismatch(const std::string& message, uint64_t offset) : Error(message), offset_(offset) {}
  uint64_t offset() const { return offset_; }

 private:
  uint64_t offset_;
};

struct VerifyOptions {
  uint64_t request_size = 4 * 1024 * 1024;
  unsigned requests = 8;
  bool check_zero_ranges = true;  // false: only data ranges (a target not known to be zero)
  Progress* progress = nullptr;
};

// Returns the number of bytes compared. Throws VerifyMismatch naming the first differing
// offset, or mk::Error when a read fails.
uint64_t verify_plan(const Endpoint& source, const Endpoint& target, const Plan& plan,
                     const VerifyOptions& options);

}  // namespace mk::engine
