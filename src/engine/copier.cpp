#include "engine/copier.h"

#include <fmt/format.h>

#include <exception>
#include <optional>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "engine/durability.h"
#include "engine/nbd_channel.h"
#include "engine/recovery.h"
#include "engine/request_pipeline.h"
#include "engine/work_queue.h"

namespace mk::engine {
namespace {

constexpr uint64_t kZeroStep = 1ull << 30;  // write-zeroes requests need no buffer

RecoveryOptions recovery_options(const CopyOptions& o) {
  RecoveryOptions r;
  r.max_retries = o.max_retries;
  r.retry_delay = o.retry_delay;
  r.request_timeout = o.request_timeout;
  return r;
}

PipelineOptions pipeline_options(const CopyOptions& o, bool target_can_zero) {
  PipelineOptions p;
  p.request_size = o.request_size;
  p.requests = o.requests;
  p.bytes_in_flight = o.bytes_in_flight;
  p.target_is_zero = o.target_is_zero;
  p.target_can_zero = target_can_zero;
  return p;
}

DurabilityOptions durability_options(const CopyOptions& o, bool target_can_flush) {
  DurabilityOptions d;
  d.flush_at_end = o.flush;
  d.target_can_flush = target_can_flush;
  d.checkpoint = o.checkpoint;
  d.checkpoint_interval = o.checkpoint_interval;
  d.max_flush_failures = o.max_retries;
  return d;
}

// One worker: the copy loop of one thread over its own source and target connections.
// The loop only moves chunks from the queue into the pipeline and waits; what a request
// becomes is the pipeline's business, failed requests and lost connections the
// transport's (RecoveringTransport), flushes and the checkpoint durability's.
class Worker {
 public:
  Worker(WorkQueue& queue, const Endpoint& source, const Endpoint& target, const CopyOptions& options,
         bool target_can_zero, bool target_can_flush)
      : queue_(queue), options_(options), network_(source, target),
        transport_(network_, recovery_options(options), [this] { return queue_.failed() || cancelled(); }),
        pipeline_(transport_, pipeline_options(options, target_can_zero), [this](const Chunk& c) { confirmed(c); }),
        durability_(transport_, durability_options(options, target_can_flush), target.describe(),
                    [this](const Chunk& c) { redo(c); }) {
    transport_.on_target_replaced([this] { durability_.target_replaced(); });
  }

  // Connections opened beforehand, for the first worker.
  void adopt(std::unique_ptr<NbdConnection> source, std::unique_ptr<NbdConnection> target) {
    transport_.adopt(NbdNetwork::adopt(std::move(source)), NbdNetwork::adopt(std::move(target)));
  }

  void run() {
    try {
      transport_.connect();  // even a worker that gets no work holds its connections
      loop();
    } catch (const std::exception& e) {
      error_ = std::current_exception();
      queue_.fail(e.what());
    }
  }

  // What ended this worker's loop, if it threw (EndpointLost keeps its type this way).
  std::exception_ptr error() const { return error_; }

  // When this worker last had nothing more to write and asked for its final flush.
  std::optional<Clock::time_point> final_flush_asked() const { return final_flush_asked_; }

  void add_stats(CopyStats& total) const {
    const PipelineStats& p = pipeline_.stats();
    total.bytes_written += p.bytes_written;
    total.bytes_zeroed += p.bytes_zeroed;
    total.bytes_zero_data += p.bytes_zero_data;
    total.retries += transport_.retries();
    total.reconnects += transport_.reconnects();
  }

 private:
  bool cancelled() const { return options_.cancel && options_.cancel->load(); }

  void loop() {
    while (!queue_.failed()) {
      if (cancelled()) {
        queue_.fail("copy cancelled");
        return;
      }
      pipeline_.fill(queue_);
      bool idle = pipeline_.in_flight() == 0 && !durability_.flushing();
      if (idle && queue_.exhausted()) {
        final_flush_asked_ = Clock::now();  // the latest ask counts: a failed flush sends work back
        if (!durability_.start_final_flush()) return;  // everything this worker wrote is durable
        continue;
      }
      durability_.tick();
      transport_.wait(idle ? 20 : 500);
    }
  }

  void confirmed(const Chunk& c) {
    durability_.confirmed(c);
    if (options_.progress) options_.progress->add_done(c.length);
  }

  // The target may have lost `c`: it is copied again, and counted again when it is.
  void redo(const Chunk& c) {
    if (options_.progress) options_.progress->sub_done(c.length);
    queue_.redo(c);
  }

  WorkQueue& queue_;
  const CopyOptions& options_;
  NbdNetwork network_;
  RecoveringTransport transport_;
  RequestPipeline pipeline_;
  Durability durability_;
  std::optional<Clock::time_point> final_flush_asked_;
  std::exception_ptr error_;
};

// Opens the copy's first connection to `endpoint`; one that cannot be opened is lost.
std::unique_ptr<NbdConnection> open_endpoint(const Endpoint& endpoint, Side side) {
  try {
    return NbdConnection::open(endpoint);
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw EndpointLost(side, e.what());
  }
}

}  // namespace

PlanTotals plan_totals(const Plan& plan, bool target_is_zero) {
  PlanTotals t;
  t.total = plan.data_bytes + (target_is_zero ? 0 : plan.zero_bytes);
  t.skipped = plan.scope_bytes - t.total;
  return t;
}

CopyStats copy_plan(const Endpoint& source, const Endpoint& target, const Plan& plan,
                    const RangeList& already_done, const CopyOptions& options,
                    OpenConnections open) {
  auto started = Clock::now();
  CopyOptions opt = options;

  auto src0 = open.source ? std::move(open.source) : open_endpoint(source, Side::Source);
  auto dst0 = open.target ? std::move(open.target) : open_endpoint(target, Side::Target);
  if (dst0->read_only()) {
    throw UsageError(fmt::format("{}: the export is read-only", target.describe()));
  }
  if (dst0->size() < plan.disk_size) {
    throw UsageError(fmt::format("{}: target is smaller ({} bytes) than the source ({} bytes)",
                                 target.describe(), dst0->size(), plan.disk_size));
  }
  uint64_t max_request = std::min(src0->max_request(), dst0->max_request());
  opt.request_size = std::max<uint64_t>(4096, std::min(opt.request_size, max_request));
  opt.requests = std::max(1u, opt.requests);
  bool can_zero = dst0->can_zero();
  unsigned connections = std::max(1u, opt.connections);
  if (connections > 1 && !(src0->can_multi_conn() && dst0->can_multi_conn())) {
    log::debug("servers do not allow multi-conn: using one connection");
    connections = 1;
  }

  // The work: the plan minus what a checkpoint says is done, minus zeros a fresh target has.
  std::vector<PlanEntry> todo;
  CopyStats total;
  for (const PlanEntry& e : plan.entries) {
    if (e.kind == ExtentKind::Zero && opt.target_is_zero) continue;
    RangeList left = subtract({{e.start, e.length}}, already_done);
    total.bytes_resumed += e.length - total_length(left);
    for (const Range& r : left) todo.push_back({r.start, r.length, e.kind});
  }
  if (opt.progress) opt.progress->add_resumed(total.bytes_resumed);

  WorkQueue queue(std::move(todo), opt.request_size, can_zero ? kZeroStep : opt.request_size);
  bool can_flush = dst0->can_flush();
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < connections; ++i) {
    workers.push_back(std::make_unique<Worker>(queue, source, target, opt, can_zero, can_flush));
  }
  workers[0]->adopt(std::move(src0), std::move(dst0));
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
  for (auto& t : threads) t.join();

  if (queue.failed()) {
    // The first failure, with its type, when a worker threw it (not a cancellation).
    for (auto& w : workers) {
      if (!w->error()) continue;
      try {
        std::rethrow_exception(w->error());
      } catch (const std::exception& e) {
        if (queue.error() == e.what()) throw;
      }
    }
    throw Error(queue.error());
  }
  std::optional<Clock::time_point> flush_asked;
  for (auto& w : workers) {
    w->add_stats(total);
    if (auto t = w->final_flush_asked(); t && (!flush_asked || *t > *flush_asked)) flush_asked = t;
  }
  auto ended = Clock::now();
  total.connections = connections;
  total.seconds = std::chrono::duration<double>(ended - started).count();
  if (flush_asked) total.flush_seconds = std::chrono::duration<double>(ended - *flush_asked).count();
  return total;
}

}  // namespace mk::engine
