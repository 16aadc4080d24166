#include "engine/recovery.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/log.h"

namespace mk::engine {
namespace {

// A lost or dropped connection fails every request on it at once: reported once (by
// the reconnection or the time-out), not once per request.
bool connection_error(int err) { return err == ENOTCONN || err == ESHUTDOWN; }

// A request that failed because its server went away or stopped answering, not because
// the server refused it.
bool went_away(int err) { return connection_error(err) || err == ETIMEDOUT || err == ECONNRESET || err == EPIPE; }

}  // namespace

std::chrono::milliseconds backoff(std::chrono::milliseconds base, unsigned failures) {
  return base * (1u << std::min(std::max(failures, 1u) - 1, 6u));
}

RecoveringTransport::RecoveringTransport(Network& network, const RecoveryOptions& options,
                                         std::function<bool()> stopped)
    : net_(network), options_(options), stopped_(std::move(stopped)), last_reply_(network.now()) {}

// The connections go first: closing one must never complete a request into an Attempt
// that is already gone.
RecoveringTransport::~RecoveringTransport() {
  source_.reset();
  target_.reset();
}

void RecoveringTransport::adopt(std::unique_ptr<Channel> source, std::unique_ptr<Channel> target) {
  source_ = std::move(source);
  target_ = std::move(target);
}

void RecoveringTransport::submit(IoRequest& request) {
  Attempt* a;
  if (free_.empty()) {
    attempts_.push_back(std::make_unique<Attempt>());
    a = attempts_.back().get();
    a->transport = this;
  } else {
    a = free_.back();
    free_.pop_back();
  }
  a->outer = &request;
  a->inner = request;
  a->inner.owner = a;
  a->inner.on_done = &RecoveringTransport::on_inner_done;
  a->side = request.kind == IoKind::Read ? Side::Source : Side::Target;
  a->failures = 0;
  send(*a);
}

void RecoveringTransport::on_inner_done(IoRequest& inner) {
  Attempt* a = static_cast<Attempt*>(inner.owner);
  a->transport->finished_.push_back(a);  // handled in wait(), outside the channel
}

// Sends `a` on its channel, or keeps it until the channel is back.
void RecoveringTransport::send(Attempt& a) {
  std::unique_ptr<Channel>& ch = channel(a.side);
  if (!ch || ch->dead()) {
    a.due = Clock::time_point::min();
    waiting_.push_back(&a);
    return;
  }
  a.inner.error = 0;
  ch->submit(a.inner);
}

void RecoveringTransport::wait(int timeout_ms) {
  reopen_dead();
  send_due();
  collect(poll_timeout(timeout_ms));
}

int RecoveringTransport::poll_timeout(int timeout_ms) {
  if (!finished_.empty()) return 0;  // failed at once, on submit
  if (waiting_.empty()) return timeout_ms;
  Clock::time_point first = waiting_.front()->due;
  for (Attempt* a : waiting_) first = std::min(first, a->due);
  auto left = std::chrono::ceil<std::chrono::milliseconds>(first - net_.now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, timeout_ms));
}

void RecoveringTransport::collect(int timeout_ms) {
  net_.poll(source_.get(), target_.get(), timeout_ms);
  bool answered = !finished_.empty();
  handle_finished();
  watch_silence(answered);
}

// Sends again the waiting requests whose time has come, in the order they failed.
void RecoveringTransport::send_due() {
  if (waiting_.empty()) return;
  std::vector<Attempt*> waiting;
  waiting.swap(waiting_);
  auto now = net_.now();
  for (Attempt* a : waiting) {
    if (a->due <= now) send(*a);
    else waiting_.push_back(a);
  }
}

void RecoveringTransport::handle_finished() {
  while (!finished_.empty()) {
    batch_.clear();
    batch_.swap(finished_);  // both keep their capacity: no allocation per poll
    for (Attempt* a : batch_) {
      if (a->inner.error != 0 && a->inner.kind != IoKind::Flush) {
        failed(*a);
        continue;
      }
      IoRequest& outer = *a->outer;
      outer.error = a->inner.error;
      release(*a);
      outer.on_done(outer);
    }
  }
}

void RecoveringTransport::failed(Attempt& a) {
  int err = a.inner.error;
  // Requests failed by our own shutdown of a silent connection timed out.
  if (timed_out_ && connection_error(err)) err = ETIMEDOUT;
  ++a.failures;
  ++retries_;
  const IoRequest& r = a.inner;
  if (a.failures > options_.max_retries) {
    std::string message = fmt::format("{}: {} of {} bytes at offset {} failed after {} attempts: {}",
                                      net_.describe(a.side), io_kind_name(r.kind), r.length, r.offset, a.failures,
                                      std::strerror(err));
    if (went_away(err)) throw EndpointLost(a.side, message);
    throw Error(message);
  }
  if (!connection_error(err) && !timed_out_) {
    log::warn("{}: {} of {} bytes at offset {} failed ({}); retry {} of {}", net_.describe(a.side),
              io_kind_name(r.kind), r.length, r.offset, std::strerror(err), a.failures, options_.max_retries);
  }
  a.due = net_.now() + backoff(options_.retry_delay, a.failures);
  waiting_.push_back(&a);
}

void RecoveringTransport::release(Attempt& a) { free_.push_back(&a); }

void RecoveringTransport::reopen_dead() {
  for (Side side : {Side::Source, Side::Target}) {
    std::unique_ptr<Channel>& ch = channel(side);
    if (!ch || ch->dead()) reopen(side);
  }
}

void RecoveringTransport::reopen(Side side) {
  std::unique_ptr<Channel>& ch = channel(side);
  bool replacing = ch != nullptr;
  if (replacing) {
    // A dead connection has completed (failed) every request it had; handle those
    // before it goes, so that each is retried once.
    handle_finished();
    log::warn("{}: connection lost, reconnecting", net_.describe(side));
    ch.reset();
  }
  const unsigned attempts = options_.max_retries + 1;
  for (unsigned attempt = 1;; ++attempt) {
    if (stopped_ && stopped_()) throw Error("copy stopped");
    try {
      ch = net_.open(side);
      timed_out_ = false;
      if (replacing) {
        ++reconnects_;
        log::info("{}: reconnected (attempt {})", net_.describe(side), attempt);
      }
      break;
    } catch (const Error& e) {
      if (attempt == attempts) {
        throw EndpointLost(side,
                           fmt::format("{} unreachable after {} attempts: {}", net_.describe(side), attempts, e.what()));
      }
      net_.sleep_for(backoff(options_.retry_delay, attempt));
    }
  }
  last_reply_ = net_.now();
  // Writes the old connection completed but never flushed may be lost if the server
  // went away: the owner of those writes copies them again.
  if (replacing && side == Side::Target && on_target_replaced_) on_target_replaced_();
}

// A server that stops answering (hung process, half-open TCP) would stall the copy
// forever. After request_timeout without any reply, shut the connections that have
// requests outstanding: their requests then fail and are retried on new connections.
void RecoveringTransport::watch_silence(bool answered) {
  auto now = net_.now();
  bool outstanding = (source_ && source_->in_flight() > 0) || (target_ && target_->in_flight() > 0);
  if (answered || !outstanding) {
    last_reply_ = now;
    return;
  }
  if (now - last_reply_ < options_.request_timeout) return;
  for (Side side : {Side::Source, Side::Target}) {
    std::unique_ptr<Channel>& ch = channel(side);
    if (!ch || ch->in_flight() == 0) continue;
    log::warn("{}: no reply for {} s; dropping the connection", net_.describe(side),
              std::chrono::duration_cast<std::chrono::seconds>(options_.request_timeout).count());
    ch->shut_down();
    timed_out_ = true;
  }
  last_reply_ = now;
}

}  // namespace mk::engine
