#include "engine/verify.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/aio_loop.h"
#include "engine/buffer_pool.h"
#include "engine/zero.h"

namespace mk::engine {
namespace {

struct Compare {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;  // target only, must be all zeros
  void* src = nullptr;
  void* dst = nullptr;
  int pending = 0;  // reads outstanding
  int error = 0;
  bool busy = false;
  std::vector<Compare*>* done = nullptr;
};

int on_read(void* user, int* error) {
  auto* c = static_cast<Compare*>(user);
  if (*error && !c->error) c->error = *error;
  if (--c->pending == 0) c->done->push_back(c);
  return 1;
}

// First offset where the two buffers differ (len if equal).
uint64_t first_difference(const unsigned char* a, const unsigned char* b, uint64_t len) {
  for (uint64_t i = 0; i < len; ++i) {
    if (a[i] != b[i]) return i;
  }
  return len;
}

}  // namespace

uint64_t verify_plan(const Endpoint& source, const Endpoint& target, const Plan& plan,
                     const VerifyOptions& options) {
  auto src = NbdConnection::open(source);
  auto dst = NbdConnection::open(target);
  uint64_t step = std::min(options.request_size, std::min(src->max_request(), dst->max_request()));
  unsigned slots = std::max(1u, options.requests);
  BufferPool pool(2 * slots, step);
  std::vector<Compare> cmps(slots);
  std::vector<Compare*> done, batch;
  for (Compare& c : cmps) c.done = &done;

  size_t index = 0;
  uint64_t pos = 0;
  uint64_t compared = 0;
  uint64_t mismatch = std::numeric_limits<uint64_t>::max();
  std::string read_error;
  unsigned in_flight = 0;

  auto next = [&](Compare& c) -> bool {
    while (index < plan.entries.size()) {
      const PlanEntry& e = plan.entries[index];
      if (e.kind == ExtentKind::Zero && !options.check_zero_ranges) {
        ++index;
        continue;
      }
      uint64_t p = std::max(pos, e.start);
      if (p >= e.end()) {
        ++index;
        continue;
      }
      uint64_t n = std::min(step, e.end() - p);
      pos = p + n;
      c.offset = p;
      c.length = n;
      c.zero = e.kind == ExtentKind::Zero;
      return true;
    }
    return false;
  };

  while (true) {
    bool stop = mismatch != std::numeric_limits<uint64_t>::max() || !read_error.empty();
    for (Compare& c : cmps) {
      if (stop || c.busy || !next(c)) continue;
      c.busy = true;
      c.error = 0;
      c.dst = pool.take();
      c.pending = c.zero ? 1 : 2;
      ++in_flight;
      nbd_completion_callback cb{.callback = on_read, .user_data = &c, .free = nullptr};
      if (nbd_aio_pread(dst->handle(), c.dst, c.length, c.offset, cb, 0) == -1) dst->fail("verify read");
      if (!c.zero) {
        c.src = pool.take();
        cb = {.callback = on_read, .user_data = &c, .free = nullptr};
        if (nbd_aio_pread(src->handle(), c.src, c.length, c.offset, cb, 0) == -1) src->fail("verify read");
      }
    }
    if (in_flight == 0) break;
    poll_handles({src->handle(), dst->handle()}, 1000);
    if (nbd_aio_is_dead(src->handle())) src->fail("connection lost during verify");
    if (nbd_aio_is_dead(dst->handle())) dst->fail("connection lost during verify");
    batch.clear();
    batch.swap(done);  // both keep their capacity: no allocation per poll
    for (Compare* c : batch) {
      --in_flight;
      if (c->error) {
        if (read_error.empty()) {
          read_error = fmt::format("verify: read of {} bytes at offset {} failed: {}", c->length,
                                   c->offset, std::strerror(c->error));
        }
      } else if (c->zero) {
        if (!is_zero(c->dst, c->length)) {
          auto* d = static_cast<const unsigned char*>(c->dst);
          uint64_t i = 0;
          while (d[i] == 0) ++i;
          mismatch = std::min(mismatch, c->offset + i);
        }
      } else if (std::memcmp(c->src, c->dst, c->length) != 0) {
        uint64_t i = first_difference(static_cast<const unsigned char*>(c->src),
                                      static_cast<const unsigned char*>(c->dst), c->length);
        mismatch = std::min(mismatch, c->offset + i);
      }
      compared += c->length;
      if (options.progress) options.progress->add_done(c->length);
      pool.give_back(c->dst);
      if (c->src) pool.give_back(c->src);
      c->src = c->dst = nullptr;
      c->busy = false;
    }
  }
  if (!read_error.empty()) throw Error(read_error);
  if (mismatch != std::numeric_limits<uint64_t>::max()) {
    throw VerifyMismatch(fmt::format("verify failed: {} differs from {} first at offset {}",
                                     target.describe(), source.describe(), mismatch),
                         mismatch);
  }
  return compared;
}

}  // namespace mk::engine
