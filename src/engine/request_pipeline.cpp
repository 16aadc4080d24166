#include "engine/request_pipeline.h"

#include <fmt/format.h>

#include <cstring>

#include "common/error.h"
#include "engine/zero.h"

namespace mk::engine {

RequestPipeline::RequestPipeline(CopyTransport& transport, const PipelineOptions& options, Confirmed confirmed)
    : transport_(transport), options_(options), confirmed_(std::move(confirmed)),
      pool_(options.requests, options.request_size), ops_(options.requests) {
  for (Op& op : ops_) {
    op.pipeline = this;
    op.io.owner = &op;
    op.io.on_done = &RequestPipeline::on_done;
  }
}

void RequestPipeline::fill(WorkQueue& queue) {
  for (Op& op : ops_) {
    if (op.busy) continue;
    if (in_flight_ > 0 && buffered_ + options_.request_size > options_.bytes_in_flight) return;
    std::optional<Chunk> c = queue.next();
    if (!c) return;
    op.chunk = *c;
    op.busy = true;
    ++in_flight_;
    if (c->kind == ExtentKind::Zero) {
      zero(op);
    } else {
      take_buffer(op);
      start(op, IoKind::Read);
    }
  }
}

void RequestPipeline::on_done(IoRequest& io) {
  Op& op = *static_cast<Op*>(io.owner);
  op.pipeline->completed(op);
}

void RequestPipeline::completed(Op& op) {
  if (op.io.error) {
    throw Error(fmt::format("{} of {} bytes at offset {} failed: {}", io_kind_name(op.io.kind), op.chunk.length,
                            op.chunk.start, std::strerror(op.io.error)));
  }
  switch (op.io.kind) {
    case IoKind::Read:
      if (is_zero(op.io.buf, op.chunk.length)) {
        if (options_.target_is_zero) {
          stats_.bytes_zero_data += op.chunk.length;
          confirm(op);
          return;
        }
        if (options_.target_can_zero) {
          pool_.give_back(op.io.buf);
          buffered_ -= op.chunk.length;
          op.io.buf = nullptr;
          zero(op);
          return;
        }
      }
      start(op, IoKind::Write);
      return;
    case IoKind::Write:
      stats_.bytes_written += op.chunk.length;
      confirm(op);
      return;
    case IoKind::Zero:
      stats_.bytes_zeroed += op.chunk.length;
      confirm(op);
      return;
    case IoKind::Flush:
      break;
  }
}

void RequestPipeline::start(Op& op, IoKind kind) {
  op.io.kind = kind;
  op.io.offset = op.chunk.start;
  op.io.length = op.chunk.length;
  op.io.error = 0;
  transport_.submit(op.io);
}

// Zeroes the chunk on the target: write-zeroes, or a zero-filled buffer written as data
// when the target cannot zero (zero chunks are then request-sized, see copy_plan).
void RequestPipeline::zero(Op& op) {
  if (options_.target_can_zero) {
    start(op, IoKind::Zero);
    return;
  }
  if (!op.io.buf) take_buffer(op);
  std::memset(op.io.buf, 0, op.chunk.length);
  start(op, IoKind::Write);
}

void RequestPipeline::take_buffer(Op& op) {
  op.io.buf = pool_.take();
  buffered_ += op.chunk.length;
}

void RequestPipeline::confirm(Op& op) {
  if (op.io.buf) {
    pool_.give_back(op.io.buf);
    buffered_ -= op.chunk.length;
    op.io.buf = nullptr;
  }
  op.busy = false;
  --in_flight_;
  confirmed_(op.chunk);
}

}  // namespace mk::engine
