#include "engine/copier.h"

#include <fmt/format.h>
#include <sys/socket.h>

#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/log.h"
#include "engine/aio_loop.h"
#include "engine/buffer_pool.h"
#include "engine/zero.h"

namespace mk::engine {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kZeroStep = 1ull << 30;  // write-zeroes requests need no buffer

struct Chunk {
  uint64_t offset = 0;
  uint64_t length = 0;
  ExtentKind kind = ExtentKind::Data;
  unsigned attempt = 0;
};

// The work shared by all workers: a cursor over the plan and chunks waiting for a retry.
// Thread-safe.
class WorkQueue {
 public:
  WorkQueue(std::vector<PlanEntry> entries, uint64_t data_step, uint64_t zero_step)
      : entries_(std::move(entries)), data_step_(data_step), zero_step_(zero_step) {}

  // The next chunk that may start now, if any.
  std::optional<Chunk> next(Clock::time_point now) {
    std::lock_guard lock(mu_);
    if (!retries_.empty() && retries_.front().first <= now) {
      Chunk c = retries_.front().second;
      retries_.pop_front();
      return c;
    }
    while (index_ < entries_.size()) {
      const PlanEntry& e = entries_[index_];
      uint64_t pos = std::max(pos_, e.start);
      if (pos >= e.end()) {
        ++index_;
        continue;
      }
      uint64_t step = e.kind == ExtentKind::Data ? data_step_ : zero_step_;
      uint64_t boundary = (pos / step + 1) * step;  // keep requests aligned to the step
      uint64_t end = std::min(e.end(), boundary);
      pos_ = end;
      return Chunk{pos, end - pos, e.kind, 0};
    }
    return std::nullopt;
  }

  void retry(const Chunk& c, Clock::time_point when) {
    std::lock_guard lock(mu_);
    auto it = retries_.begin();
    while (it != retries_.end() && it->first <= when) ++it;
    retries_.insert(it, {when, c});
  }

  // Puts a completed but unconfirmed range back, split into request-sized chunks.
  void redo(uint64_t offset, uint64_t length, ExtentKind kind, Clock::time_point when) {
    uint64_t step = kind == ExtentKind::Data ? data_step_ : zero_step_;
    while (length > 0) {
      uint64_t n = std::min(length, step - offset % step);
      retry(Chunk{offset, n, kind, 0}, when);
      offset += n;
      length -= n;
    }
  }

  bool exhausted() {
    std::lock_guard lock(mu_);
    return index_ >= entries_.size() && retries_.empty();
  }

  void fail(const std::string& message) {
    std::lock_guard lock(mu_);
    if (error_.empty()) error_ = message;
    failed_ = true;
  }
  bool failed() const { return failed_.load(); }
  std::string error() {
    std::lock_guard lock(mu_);
    return error_;
  }

 private:
  std::mutex mu_;
  std::vector<PlanEntry> entries_;
  size_t index_ = 0;
  uint64_t pos_ = 0;
  uint64_t data_step_, zero_step_;
  std::deque<std::pair<Clock::time_point, Chunk>> retries_;
  std::string error_;
  std::atomic<bool> failed_{false};
};

// One worker: a source and a target connection driven from one thread.
class Worker {
 public:
  Worker(WorkQueue& queue, const Endpoint& source, const Endpoint& target,
         const CopyOptions& options, bool target_can_zero)
      : queue_(queue), source_ep_(source), target_ep_(target), opt_(options),
        target_can_zero_(target_can_zero), pool_(options.requests, options.request_size),
        ops_(options.requests) {
    for (Op& op : ops_) op.worker = this;
  }

  void adopt(std::unique_ptr<NbdConnection> src, std::unique_ptr<NbdConnection> dst) {
    src_ = std::move(src);
    dst_ = std::move(dst);
  }

  // Called once both connections of a new worker are open, so that later openings
  // count as reconnections.
  void mark_connected() { ever_connected_ = true; }

  void run() {
    try {
      loop();
    } catch (const std::exception& e) {
      queue_.fail(e.what());
    }
  }

  const CopyStats& stats() const { return stats_; }

 private:
  enum class Stage { Idle, Reading, Writing, Zeroing };

  struct Op {
    Worker* worker = nullptr;
    Chunk chunk;
    void* buf = nullptr;
    Stage stage = Stage::Idle;
    int error = 0;
  };

  // A range confirmed written but not yet flushed; merged with its neighbour when possible.
  struct Pending {
    uint64_t offset, length;
    ExtentKind kind;
  };

  static int on_complete(void* user, int* error) {
    Op* op = static_cast<Op*>(user);
    op->error = *error;
    op->worker->completed_.push_back(op);
    return 1;
  }

  static int on_flush(void* user, int* error) {
    Worker* w = static_cast<Worker*>(user);
    w->flush_error_ = *error;
    w->flush_done_ = true;
    return 1;
  }

  bool cancelled() const { return opt_.cancel && opt_.cancel->load(); }

  static bool dead(const std::unique_ptr<NbdConnection>& c) {
    return !c || nbd_aio_is_dead(c->handle()) || nbd_aio_is_closed(c->handle());
  }

  void loop() {
    while (!queue_.failed()) {
      if (cancelled()) {
        queue_.fail("copy cancelled");
        break;
      }
      reconnect_if_needed();
      start_requests();
      bool idle = in_flight_ == 0 && !flush_in_flight_;
      if (idle && queue_.exhausted()) {
        if (pending_.empty() || !needs_flush()) break;
        start_flush();  // final flush: makes everything this worker wrote durable
        idle = false;
      }
      if (opt_.checkpoint && !flush_in_flight_ && !pending_.empty() &&
          Clock::now() - last_checkpoint_ >= opt_.checkpoint_interval) {
        start_flush();
      }
      poll_handles({src_ ? src_->handle() : nullptr, dst_ ? dst_->handle() : nullptr},
                   idle ? 20 : 500);
      if (!completed_.empty() || flush_done_) last_reply_ = Clock::now();
      process_completions();
      process_flush();
      drop_silent_connections(idle);
    }
  }

  // A server that stops answering (hung process, half-open TCP) would stall the copy
  // forever. After `request_timeout` without any reply, shut the sockets that have
  // requests outstanding: libnbd then fails those requests, and they are retried on a
  // new connection like any other lost connection.
  void drop_silent_connections(bool idle) {
    if (idle) {
      last_reply_ = Clock::now();
      return;
    }
    if (Clock::now() - last_reply_ < opt_.request_timeout) return;
    for (auto* conn : {src_.get(), dst_.get()}) {
      if (!conn || nbd_aio_in_flight(conn->handle()) <= 0) continue;
      log::warn("{}: no reply for {} s; dropping the connection", conn->endpoint().describe(),
                std::chrono::duration_cast<std::chrono::seconds>(opt_.request_timeout).count());
      int fd = nbd_aio_get_fd(conn->handle());
      if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
      timed_out_ = true;
    }
    last_reply_ = Clock::now();
  }

  bool needs_flush() const { return opt_.flush || opt_.checkpoint; }

  void reconnect_if_needed() {
    bool first = !ever_connected_;
    if (dead(src_)) reconnect(src_, source_ep_);
    if (dead(dst_)) {
      reconnect(dst_, target_ep_);
      // Writes this connection completed but never flushed may be lost if the server
      // went away: copy them again.
      requeue_unflushed();
    }
    if (first) ever_connected_ = true;
  }

  void reconnect(std::unique_ptr<NbdConnection>& conn, const Endpoint& ep) {
    if (conn) {
      // libnbd retires every command of a dead handle with an error before it reports
      // the handle dead; those completions already requeued their chunks.
      process_completions();
      log::warn("{}: connection lost, reconnecting", ep.describe());
      conn.reset();
    }
    std::string last_error;
    for (unsigned attempt = 1; attempt <= opt_.max_retries + 1; ++attempt) {
      if (queue_.failed() || cancelled()) throw Error("copy stopped");
      try {
        conn = NbdConnection::open(ep);
        timed_out_ = false;
        if (ever_connected_) {
          ++stats_.reconnects;
          log::info("{}: reconnected (attempt {})", ep.describe(), attempt);
        }
        return;
      } catch (const Error& e) {
        last_error = e.what();
        std::this_thread::sleep_for(opt_.retry_delay * (1u << std::min(attempt - 1, 6u)));
      }
    }
    throw Error(fmt::format("{} unreachable after {} attempts: {}", ep.describe(),
                            opt_.max_retries + 1, last_error));
  }

  void start_requests() {
    auto now = Clock::now();
    for (Op& op : ops_) {
      if (op.stage != Stage::Idle) continue;
      if (queue_.failed()) return;
      if (bytes_in_flight_ + opt_.request_size > opt_.bytes_in_flight && in_flight_ > 0) return;
      std::optional<Chunk> c = queue_.next(now);
      if (!c) return;
      op.chunk = *c;
      op.error = 0;
      if (c->kind == ExtentKind::Zero) {
        start_zero(op);
      } else {
        op.buf = pool_.take();
        op.stage = Stage::Reading;
        ++in_flight_;
        bytes_in_flight_ += c->length;
        nbd_completion_callback cb{.callback = on_complete, .user_data = &op, .free = nullptr};
        if (nbd_aio_pread(src_->handle(), op.buf, c->length, c->offset, cb, 0) == -1) {
          op.error = nbd_get_errno() ? nbd_get_errno() : EIO;
          completed_.push_back(&op);
        }
      }
    }
  }

  void start_zero(Op& op) {
    ++in_flight_;
    nbd_completion_callback cb{.callback = on_complete, .user_data = &op, .free = nullptr};
    int64_t r;
    if (target_can_zero_) {
      op.stage = Stage::Zeroing;
      r = nbd_aio_zero(dst_->handle(), op.chunk.length, op.chunk.offset, cb, 0);
    } else {
      // The target cannot zero: write a zero-filled buffer (zero chunks are then
      // request-sized, see copy_plan).
      if (!op.buf) {
        op.buf = pool_.take();
        bytes_in_flight_ += op.chunk.length;
      }
      std::memset(op.buf, 0, op.chunk.length);
      op.stage = Stage::Writing;
      r = nbd_aio_pwrite(dst_->handle(), op.buf, op.chunk.length, op.chunk.offset, cb, 0);
    }
    if (r == -1) {
      op.error = nbd_get_errno() ? nbd_get_errno() : EIO;
      completed_.push_back(&op);
    }
  }

  void process_completions() {
    // Callbacks only append; handle them here, outside libnbd.
    while (!completed_.empty()) {
      batch_.clear();
      batch_.swap(completed_);  // both vectors keep their capacity: no allocation per poll
      for (Op* op : batch_) handle(*op);
    }
  }

  void handle(Op& op) {
    --in_flight_;
    if (op.error) {
      fail_op(op);
      return;
    }
    if (op.stage == Stage::Reading) {
      if (is_zero(op.buf, op.chunk.length)) {
        if (opt_.target_is_zero) {
          stats_.bytes_zero_data += op.chunk.length;
          finish_op(op);
          return;
        }
        if (target_can_zero_) {
          pool_.give_back(op.buf);
          bytes_in_flight_ -= op.chunk.length;
          op.buf = nullptr;
          start_zero(op);
          return;
        }
      }
      ++in_flight_;
      op.stage = Stage::Writing;
      nbd_completion_callback cb{.callback = on_complete, .user_data = &op, .free = nullptr};
      if (nbd_aio_pwrite(dst_->handle(), op.buf, op.chunk.length, op.chunk.offset, cb, 0) == -1) {
        op.error = nbd_get_errno() ? nbd_get_errno() : EIO;
        completed_.push_back(&op);
      }
      return;
    }
    if (op.stage == Stage::Zeroing) stats_.bytes_zeroed += op.chunk.length;
    else stats_.bytes_written += op.chunk.length;
    finish_op(op);
  }

  void finish_op(Op& op) {
    add_pending(op.chunk);
    if (opt_.progress) opt_.progress->add_done(op.chunk.length);
    release(op);
  }

  void release(Op& op) {
    if (op.buf) {
      pool_.give_back(op.buf);
      bytes_in_flight_ -= op.chunk.length;
    }
    op.buf = nullptr;
    op.stage = Stage::Idle;
  }

  void fail_op(Op& op) {
    const Endpoint& ep = op.stage == Stage::Reading ? source_ep_ : target_ep_;
    const char* what = op.stage == Stage::Reading ? "read" : op.stage == Stage::Zeroing ? "write-zeroes" : "write";
    Chunk c = op.chunk;
    int err = op.error;
    // Requests failed by our own shutdown of a silent connection timed out.
    if (timed_out_ && (err == ENOTCONN || err == ESHUTDOWN)) err = ETIMEDOUT;
    release(op);
    ++c.attempt;
    ++stats_.retries;
    if (c.attempt > opt_.max_retries) {
      queue_.fail(fmt::format("{}: {} of {} bytes at offset {} failed after {} attempts: {}",
                              ep.describe(), what, c.length, c.offset, c.attempt, std::strerror(err)));
      return;
    }
    // A lost or silent connection fails every request in flight at once; it is reported
    // once, by reconnect() or drop_silent_connections(), rather than once per request.
    if (err != ENOTCONN && err != ESHUTDOWN && !timed_out_) {
      log::warn("{}: {} of {} bytes at offset {} failed ({}); retry {} of {}", ep.describe(), what,
                c.length, c.offset, std::strerror(err), c.attempt, opt_.max_retries);
    }
    queue_.retry(c, Clock::now() + opt_.retry_delay * (1u << std::min(c.attempt - 1, 6u)));
  }

  void add_pending(const Chunk& c) {
    if (!pending_.empty()) {
      Pending& last = pending_.back();
      if (last.kind == c.kind && last.offset + last.length == c.offset) {
        last.length += c.length;
        return;
      }
    }
    pending_.push_back({c.offset, c.length, c.kind});
  }

  void start_flush() {
    flushing_.swap(pending_);
    pending_.clear();
    flush_done_ = false;
    flush_error_ = 0;
    if (!dst_->can_flush()) {
      flush_done_ = true;  // nothing more the server can promise
    } else {
      nbd_completion_callback cb{.callback = on_flush, .user_data = this, .free = nullptr};
      if (nbd_aio_flush(dst_->handle(), cb, 0) == -1) {
        flush_error_ = nbd_get_errno() ? nbd_get_errno() : EIO;
        flush_done_ = true;
      }
    }
    flush_in_flight_ = true;
  }

  void process_flush() {
    if (!flush_in_flight_ || !flush_done_) return;
    flush_in_flight_ = false;
    last_checkpoint_ = Clock::now();
    if (flush_error_) {
      ++flush_failures_;
      if (flush_failures_ > opt_.max_retries) {
        queue_.fail(fmt::format("{}: flush failed after {} attempts: {}", target_ep_.describe(),
                                flush_failures_, std::strerror(flush_error_)));
        return;
      }
      log::warn("{}: flush failed ({}); rewriting the unconfirmed ranges", target_ep_.describe(),
                std::strerror(flush_error_));
      for (const Pending& p : flushing_) redo(p);
      flushing_.clear();
      return;
    }
    flush_failures_ = 0;
    if (opt_.checkpoint) {
      RangeList durable;
      durable.reserve(flushing_.size());
      for (const Pending& p : flushing_) durable.push_back({p.offset, p.length});
      opt_.checkpoint->record(durable);
    }
    flushing_.clear();
  }

  void requeue_unflushed() {
    for (const Pending& p : pending_) redo(p);
    for (const Pending& p : flushing_) redo(p);
    pending_.clear();
    flushing_.clear();
    flush_in_flight_ = false;
  }

  void redo(const Pending& p) {
    if (opt_.progress) opt_.progress->sub_done(p.length);  // counted again when redone
    queue_.redo(p.offset, p.length, p.kind, Clock::now());
  }

  WorkQueue& queue_;
  const Endpoint& source_ep_;
  const Endpoint& target_ep_;
  const CopyOptions& opt_;
  bool target_can_zero_;
  BufferPool pool_;
  std::vector<Op> ops_;
  std::vector<Op*> completed_;
  std::vector<Op*> batch_;  // completions being handled
  unsigned in_flight_ = 0;
  uint64_t bytes_in_flight_ = 0;  // data held in buffers
  std::unique_ptr<NbdConnection> src_, dst_;
  std::vector<Pending> pending_, flushing_;
  bool flush_in_flight_ = false;
  bool flush_done_ = false;
  int flush_error_ = 0;
  unsigned flush_failures_ = 0;
  Clock::time_point last_checkpoint_ = Clock::now();
  Clock::time_point last_reply_ = Clock::now();
  bool timed_out_ = false;  // we shut a silent connection; its failures are time-outs
  bool ever_connected_ = false;
  CopyStats stats_;
};

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

  auto src0 = open.source ? std::move(open.source) : NbdConnection::open(source);
  auto dst0 = open.target ? std::move(open.target) : NbdConnection::open(target);
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
  std::vector<std::unique_ptr<Worker>> workers;
  for (unsigned i = 0; i < connections; ++i) {
    workers.push_back(std::make_unique<Worker>(queue, source, target, opt, can_zero));
  }
  workers[0]->adopt(std::move(src0), std::move(dst0));
  workers[0]->mark_connected();
  std::vector<std::thread> threads;
  for (auto& w : workers) threads.emplace_back([&w] { w->run(); });
  for (auto& t : threads) t.join();

  if (queue.failed()) throw Error(queue.error());
  for (auto& w : workers) {
    const CopyStats& s = w->stats();
    total.bytes_written += s.bytes_written;
    total.bytes_zeroed += s.bytes_zeroed;
    total.bytes_zero_data += s.bytes_zero_data;
    total.retries += s.retries;
    total.reconnects += s.reconnects;
  }
  total.connections = connections;
  total.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  return total;
}

}  // namespace mk::engine
