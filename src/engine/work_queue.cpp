#include "engine/work_queue.h"

#include <algorithm>

namespace mk::engine {

WorkQueue::WorkQueue(std::vector<PlanEntry> entries, uint64_t data_step, uint64_t zero_step)
    : entries_(std::move(entries)), data_step_(data_step), zero_step_(zero_step) {}

std::optional<Chunk> WorkQueue::next() {
  std::lock_guard lock(mu_);
  if (!redo_.empty()) {
    Chunk c = redo_.front();
    redo_.pop_front();
    return c;
  }
  while (index_ < entries_.size()) {
    const PlanEntry& e = entries_[index_];
    uint64_t pos = std::max(pos_, e.start);
    if (pos >= e.end()) {
      ++index_;
      continue;
    }
    uint64_t boundary = (pos / step(e.kind) + 1) * step(e.kind);  // keep requests aligned to the step
    uint64_t end = std::min(e.end(), boundary);
    pos_ = end;
    return Chunk{pos, end - pos, e.kind};
  }
  return std::nullopt;
}

void WorkQueue::redo(const Chunk& range) {
  std::lock_guard lock(mu_);
  uint64_t offset = range.start, length = range.length;
  while (length > 0) {
    uint64_t n = std::min(length, step(range.kind) - offset % step(range.kind));
    redo_.push_back(Chunk{offset, n, range.kind});
    offset += n;
    length -= n;
  }
}

bool WorkQueue::exhausted() {
  std::lock_guard lock(mu_);
  return index_ >= entries_.size() && redo_.empty();
}

void WorkQueue::fail(const std::string& message) {
  std::lock_guard lock(mu_);
  if (error_.empty()) error_ = message;
  failed_ = true;
}

std::string WorkQueue::error() {
  std::lock_guard lock(mu_);
  return error_;
}

}  // namespace mk::engine
