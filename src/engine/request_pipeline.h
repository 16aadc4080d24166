// The request pipeline of one copy worker: reads chunks from the source and writes them
// to the target through a CopyTransport, keeping many requests in flight.
//
// Up to `requests` chunks are in flight at once, and no more than `bytes_in_flight` of
// data buffers (from a fixed pool, allocated once). A chunk read as all zeros becomes a
// write-zeroes, or nothing at all on a target known to be zero; a zero chunk of the plan
// is never read. Every chunk the target confirmed is passed to `confirmed` (durability
// and progress take it from there). The pipeline knows nothing of connections or
// retries: a request that the transport reports failed ends the copy (throws).
// Driven from one thread; owns its buffers and its requests.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "engine/buffer_pool.h"
#include "engine/copy_transport.h"
#include "engine/work_queue.h"

namespace mk::engine {

struct PipelineOptions {
  uint64_t request_size = 1024 * 1024;   // largest chunk; the buffer size
  unsigned requests = 64;                // chunks in flight
  uint64_t bytes_in_flight = 8 << 20;    // data buffers in use at once (at least one)
  bool target_is_zero = false;           // zeros read from the source need no write
  bool target_can_zero = true;           // else zeros are written as data
};

struct PipelineStats {
  uint64_t bytes_written = 0;    // data written to the target (zero buffers included)
  uint64_t bytes_zeroed = 0;     // zeroed with write-zeroes
  uint64_t bytes_zero_data = 0;  // read as zeros and not written (zero target)
};

class RequestPipeline {
 public:
  using Confirmed = std::function<void(const Chunk&)>;

  // `transport` must outlive the pipeline. A zero chunk must not be longer than
  // request_size when the target cannot zero (it is then written from a buffer).
  RequestPipeline(CopyTransport& transport, const PipelineOptions& options, Confirmed confirmed);
  RequestPipeline(const RequestPipeline&) = delete;
  RequestPipeline& operator=(const RequestPipeline&) = delete;

  // Starts chunks from `queue` while a slot and buffer room are free.
  void fill(WorkQueue& queue);

  // Chunks started and not yet confirmed.
  unsigned in_flight() const { return in_flight_; }
  const PipelineStats& stats() const { return stats_; }

 private:
  struct Op {
    RequestPipeline* pipeline = nullptr;
    Chunk chunk;
    IoRequest io;
    bool busy = false;
  };

  static void on_done(IoRequest& io);
  void completed(Op& op);
  void start(Op& op, IoKind kind);
  void zero(Op& op);
  void take_buffer(Op& op);
  void confirm(Op& op);

  CopyTransport& transport_;
  const PipelineOptions options_;
  Confirmed confirmed_;
  BufferPool pool_;
  std::vector<Op> ops_;
  unsigned in_flight_ = 0;
  uint64_t buffered_ = 0;  // bytes of buffers in use
  PipelineStats stats_;
};

}  // namespace mk::engine
