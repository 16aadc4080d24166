// Durability of one copy worker's writes: the ranges the target confirmed, flushes that
// make them durable, and the checkpoint records of flushed ranges.
//
// confirmed() collects ranges (adjacent ones of the same kind merge). With a
// checkpoint, a flush starts every checkpoint_interval, and the ranges it covered are
// recorded once it succeeded; at the end, start_final_flush() makes the rest durable.
// A flush covers what the target confirmed before it started, so the ranges confirmed
// meanwhile wait for the next one. When a flush fails, or the target connection was
// replaced (target_replaced()), the target may have lost the unflushed ranges: they go
// to `redo` to be copied again, never to the checkpoint. After max_flush_failures
// failures in a row the copy fails (throws). Driven from one thread, like the pipeline.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "engine/checkpoint.h"
#include "engine/copy_transport.h"
#include "engine/work_queue.h"

namespace mk::engine {

struct DurabilityOptions {
  bool flush_at_end = true;      // make the copy durable before it ends
  bool target_can_flush = true;  // else flushes are skipped (nothing more can be promised)
  Checkpoint* checkpoint = nullptr;  // optional, not owned
  std::chrono::milliseconds checkpoint_interval{1000};
  unsigned max_flush_failures = 5;
  std::function<Clock::time_point()> now = [] { return Clock::now(); };
};

class Durability {
 public:
  using Redo = std::function<void(const Chunk&)>;

  // `transport` carries the flushes; `target` names the target in messages.
  Durability(CopyTransport& transport, DurabilityOptions options, std::string target, Redo redo);
  Durability(const Durability&) = delete;
  Durability& operator=(const Durability&) = delete;

  // The target confirmed this write or zeroing (not yet durable).
  void confirmed(const Chunk& range);

  // Starts the periodic flush for the checkpoint when one is due.
  void tick();

  // The copy has nothing more to write: starts the flush that makes the rest durable.
  // False when there is nothing to flush (or no flush is wanted): durability is done.
  bool start_final_flush();

  // The target connection was replaced: every unflushed range is redone, and the
  // outcome of a flush sent on the old connection is ignored.
  void target_replaced();

  // A flush is outstanding.
  bool flushing() const { return outstanding_; }

 private:
  static void on_flush_done(IoRequest& io);
  bool wanted() const { return options_.flush_at_end || options_.checkpoint; }
  void start_flush();
  void flushed(int error);
  void redo_all(std::vector<Chunk>& ranges);

  CopyTransport& transport_;
  const DurabilityOptions options_;
  const std::string target_;
  Redo redo_;
  std::vector<Chunk> pending_;   // confirmed since the last flush started
  std::vector<Chunk> flushing_;  // covered by the flush in flight
  IoRequest flush_;
  bool outstanding_ = false;     // flush_ is submitted and not yet done
  bool stale_ = false;           // the outstanding flush was sent on a replaced connection
  unsigned failures_ = 0;        // flush failures in a row
  Clock::time_point last_flush_;
};

}  // namespace mk::engine
