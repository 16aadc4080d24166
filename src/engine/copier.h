// The copy pipeline: moves the ranges of a Plan from a source NBD export to a target.
//
// Each worker thread owns one source and one target connection and keeps up to
// `requests` asynchronous requests in flight on them, with buffers from its own fixed
// pool; workers take chunks from a shared cursor over the plan. A chunk read as all
// zeros becomes a write-zeroes (or nothing, on a fresh target). Failed requests are
// retried with backoff, reconnecting dead connections, up to `max_retries` times per
// chunk; then the copy fails with the export, offset and cause. With a checkpoint,
// completed ranges are recorded once the target has flushed them.
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
  std::chrono::milliseconds retry_delay{200};  // doubles at each attempt
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

// Copies `plan` minus `already_done`. Throws mk::Error on failure or cancellation.
CopyStats copy_plan(const Endpoint& source, const Endpoint& target, const Plan& plan,
                    const RangeList& already_done, const CopyOptions& options,
                    OpenConnections open = {});

}  // namespace mk::engine
