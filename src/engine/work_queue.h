// The work of one copy shared by its workers: a cursor over the plan's entries, cut into
// request-sized chunks, and ranges that must be copied again.
//
// Chunks never cross a multiple of their step (the request size for data, a larger
// step for zero ranges), so requests stay aligned whatever the plan's extents. Ranges
// given back with redo() (confirmed by a target that may have lost them before a flush)
// come out first, cut the same way. The queue also carries the copy's first failure,
// which stops every worker. Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "engine/plan.h"

namespace mk::engine {

// A piece of a plan entry, at most one step long: what one request moves.
using Chunk = PlanEntry;

class WorkQueue {
 public:
  // `entries` sorted and not overlapping; steps > 0.
  WorkQueue(std::vector<PlanEntry> entries, uint64_t data_step, uint64_t zero_step);

  // The next chunk to copy, if any: a redone range first, then the plan's next piece.
  std::optional<Chunk> next();

  // Copies `range` again (the target may have lost it).
  void redo(const Chunk& range);

  // Nothing left to hand out (chunks handed out may still be in flight).
  bool exhausted();

  // Records the copy's first failure; later ones are dropped.
  void fail(const std::string& message);
  bool failed() const { return failed_.load(); }
  std::string error();

 private:
  uint64_t step(ExtentKind kind) const { return kind == ExtentKind::Data ? data_step_ : zero_step_; }

  std::mutex mu_;  // guards everything below but failed_
  std::vector<PlanEntry> entries_;
  size_t index_ = 0;  // the entry being cut
  uint64_t pos_ = 0;  // where the next chunk of it starts
  const uint64_t data_step_, zero_step_;
  std::deque<Chunk> redo_;
  std::string error_;
  std::atomic<bool> failed_{false};
};

}  // namespace mk::engine
