// A strict in-memory CopyTransport for the pipeline's and durability's unit tests.
//
// The source and the target are byte strings. submit() only queues a request (checking
// that it is well formed and not submitted twice); wait() completes the queued requests
// in submission order, or in reverse order when `reverse` is set, and records every
// request. Requests that `fail` selects complete with its errno instead. A flush records
// which writes it covers: those completed before it was submitted.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "engine/copy_transport.h"

namespace mk::engine::fake {

struct Logged {
  IoKind kind;
  uint64_t offset, length;
  bool operator==(const Logged&) const = default;
};

class FakeTransport : public CopyTransport {
 public:
  FakeTransport(std::string source, std::string target) : source(std::move(source)), target(std::move(target)) {}

  void submit(IoRequest& r) override {
    ASSERT_NE(r.on_done, nullptr);
    ASSERT_EQ(queued_.count(&r), 0u) << "a request submitted twice";
    if (r.kind != IoKind::Flush) {
      ASSERT_GT(r.length, 0u);
      ASSERT_LE(r.offset + r.length, (r.kind == IoKind::Read ? source : target).size()) << "past the end";
    }
    if (r.kind == IoKind::Read || r.kind == IoKind::Write) {
      ASSERT_NE(r.buf, nullptr);
    }
    queued_.insert(&r);
    pending_.push_back(&r);
    if (r.kind == IoKind::Flush) flush_covers_[&r] = completed_writes;
    max_in_flight = std::max(max_in_flight, pending_.size());
  }

  void wait(int timeout_ms) override {
    ++waits;
    std::vector<IoRequest*> now;
    now.swap(pending_);
    if (reverse) std::reverse(now.begin(), now.end());
    for (IoRequest* r : now) {
      queued_.erase(r);
      bool flush = r->kind == IoKind::Flush;
      log.push_back({r->kind, flush ? 0 : r->offset, flush ? 0 : r->length});
      r->error = fail ? fail(*r) : 0;
      if (!r->error) apply(*r);
      flush_covers_.erase(r);
      r->on_done(*r);  // may submit more: queued for the next wait()
    }
  }

  // Runs wait() until nothing is pending (at most `rounds` times).
  void drain(int rounds = 10000) {
    while (!pending_.empty() && rounds-- > 0) wait(0);
  }

  size_t pending() const { return pending_.size(); }
  std::vector<Logged> of_kind(IoKind kind) const {
    std::vector<Logged> out;
    for (const Logged& l : log) {
      if (l.kind == kind) out.push_back(l);
    }
    return out;
  }

  std::string source, target;
  std::vector<Logged> log;
  std::function<int(const IoRequest&)> fail;  // errno for a request, or 0
  bool reverse = false;
  size_t max_in_flight = 0;
  int waits = 0;
  std::vector<Logged> completed_writes;           // writes and zeroes done so far
  std::vector<std::vector<Logged>> flushed_sets;  // per successful flush: the writes it covered

 private:
  void apply(IoRequest& r) {
    switch (r.kind) {
      case IoKind::Read: std::memcpy(r.buf, source.data() + r.offset, r.length); break;
      case IoKind::Write:
        target.replace(r.offset, r.length, static_cast<const char*>(r.buf), r.length);
        completed_writes.push_back({r.kind, r.offset, r.length});
        break;
      case IoKind::Zero:
        target.replace(r.offset, r.length, std::string(r.length, '\0'));
        completed_writes.push_back({r.kind, r.offset, r.length});
        break;
      case IoKind::Flush: flushed_sets.push_back(flush_covers_.at(&r)); break;
    }
  }

  std::vector<IoRequest*> pending_;
  std::set<IoRequest*> queued_;
  std::map<IoRequest*, std::vector<Logged>> flush_covers_;  // per pending flush: writes done before it
};

}  // namespace mk::engine::fake
