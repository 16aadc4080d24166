#include "engine/durability.h"

#include <fmt/format.h>

#include <cstring>

#include "common/error.h"
#include "common/log.h"

namespace mk::engine {

Durability::Durability(CopyTransport& transport, DurabilityOptions options, std::string target, Redo redo)
    : transport_(transport), options_(std::move(options)), target_(std::move(target)), redo_(std::move(redo)),
      last_flush_(options_.now()) {
  flush_.kind = IoKind::Flush;
  flush_.owner = this;
  flush_.on_done = &Durability::on_flush_done;
}

void Durability::confirmed(const Chunk& c) {
  if (!pending_.empty()) {
    Chunk& last = pending_.back();
    if (last.kind == c.kind && last.end() == c.start) {
      last.length += c.length;
      return;
    }
  }
  pending_.push_back(c);
}

void Durability::tick() {
  if (!options_.checkpoint || outstanding_ || pending_.empty()) return;
  if (options_.now() - last_flush_ >= options_.checkpoint_interval) start_flush();
}

bool Durability::start_final_flush() {
  if (outstanding_) return true;
  if (pending_.empty() || !wanted()) return false;
  start_flush();
  return true;
}

void Durability::start_flush() {
  flushing_.swap(pending_);
  pending_.clear();
  if (!options_.target_can_flush) {
    flushed(0);  // nothing more the server can promise
    return;
  }
  outstanding_ = true;
  stale_ = false;
  flush_.error = 0;
  transport_.submit(flush_);
}

void Durability::on_flush_done(IoRequest& io) {
  Durability& d = *static_cast<Durability*>(io.owner);
  d.outstanding_ = false;
  if (d.stale_) return;  // its ranges were redone when the connection was replaced
  d.flushed(io.error);
}

void Durability::flushed(int error) {
  last_flush_ = options_.now();
  if (error) {
    ++failures_;
    if (failures_ > options_.max_flush_failures) {
      throw Error(fmt::format("{}: flush failed after {} attempts: {}", target_, failures_, std::strerror(error)));
    }
    log::warn("{}: flush failed ({}); rewriting the unconfirmed ranges", target_, std::strerror(error));
    redo_all(flushing_);
    return;
  }
  failures_ = 0;
  if (options_.checkpoint) {
    RangeList durable;
    durable.reserve(flushing_.size());
    for (const Chunk& c : flushing_) durable.push_back({c.start, c.length});
    options_.checkpoint->record(durable);
  }
  flushing_.clear();
}

void Durability::target_replaced() {
  redo_all(pending_);
  redo_all(flushing_);
  if (outstanding_) stale_ = true;
}

void Durability::redo_all(std::vector<Chunk>& ranges) {
  for (const Chunk& c : ranges) redo_(c);
  ranges.clear();
}

}  // namespace mk::engine
