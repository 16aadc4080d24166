// The copy: moves the ranges of a Plan from a source NBD export to a target.
//
// copy_plan() cuts the plan (minus what a checkpoint says is done) into request-sized
// chunks on a shared WorkQueue and runs one worker thread per connection pair (more
// than one only when both servers allow multi-conn). A worker's loop moves chunks
// into its RequestPipeline (reads, writes, zero detection, requests in flight) over a
// RecoveringTransport (failed requests retried with backoff up to `max_retries` times,
// dead or silent connections reopened) and hands confirmed ranges to Durability
// (flushes; with a checkpoint, flushed ranges are recorded). A chunk read as all zeros
// becomes a write-zeroes (or nothing, on a fresh target). When a request still fails,
// the copy fails with the export, offset and cause.
//
// copy_plan() blocks until the copy finished or failed; it is safe to call from several
// threads for different disks (each call owns all its state).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "common/endpoint.h"
#include "engine/checkpoint.h"
#include "engine/nbd_connection.h"
#include "engine/plan.h"
#include "engine/progress.h"

namespace mk::engine {

struct CopyOptions {
  uint64_t request_size = 1024 * 1024;
  unsigned requests = 64;    // in flight per connection (small changed areas need many)
  // Data bytes in flight per connection. Measured here: keeping the buffers in use
  // within the CPU caches (about 8 MiB) beats deeper pipelines on dense copies.
  uint64_t bytes_in_flight = 8 * 1024 * 1024;
  unsigned connections = 1;  // used only when both servers allow multi-conn
  bool target_is_zero = false;
  bool flush = true;  // flush the target at the end
  unsigned max_retries = 5;
  std::chrono::milliseconds retry_delay{200};  // doubles at each failure of a request
  // No reply at all for this long with requests outstanding: the connection is dropped
  // and its requests retried on a new one.
  std::chrono::milliseconds request_timeout{120000};
  std::chrono::milliseconds checkpoint_interval{1000};
  Checkpoint* checkpoint = nullptr;     // optional, not owned
  Progress* progress = nullptr;         // optional, not owned
  std::atomic<bool>* cancel = nullptr;  // optional: set to stop early (copy then throws)
};

struct CopyStats {
  uint64_t bytes_written = 0;   // data written to the target
  uint64_t bytes_zeroed = 0;    // zeroed with write-zeroes (plan zeros and zero buffers)
  uint64_t bytes_zero_data = 0; // data that read as zeros and needed no write (fresh target)
  uint64_t bytes_resumed = 0;   // already done according to the checkpoint
  unsigned retries = 0;
  unsigned reconnects = 0;
  unsigned connections = 0;
  double seconds = 0;
  // Of `seconds`, the tail spent making the writes durable: from the moment the last
  // connection had written everything and asked for its final flush, to the end.
  double flush_seconds = 0;
};

// What the plan obliges the pass to move, given whether the target is fresh:
// the progress total (data + zeroed ranges) and the bytes skipped outright.
struct PlanTotals {
  uint64_t total = 0;
  uint64_t skipped = 0;
};
PlanTotals plan_totals(const Plan& plan, bool target_is_zero);

// Connections a caller already opened (for planning and checks) and hands over, so
// that the copy does not negotiate them again. Either may be null.
struct OpenConnections {
  std::unique_ptr<NbdConnection> source;
  std::unique_ptr<NbdConnection> target;
};

// Copies `plan` minus `already_done`. Throws mk::Error on failure or cancellation,
// EndpointLost (engine/endpoint_lost.h) when the source or the target could not be
// reached any more.
CopyStats copy_plan(const Endpoint& source, const Endpoint& target, const Plan& plan,
                    const RangeList& already_done, const CopyOptions& options,
                    OpenConnections open = {});

}  // namespace mk::engine
