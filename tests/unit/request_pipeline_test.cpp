// Unit tests for src/engine/request_pipeline.h over an in-memory transport: what each
// chunk becomes (write, write-zeroes, nothing), the limits on requests and buffers in
// flight, and what a failure reported by the transport does.
#include "engine/request_pipeline.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <string>

#include "common/error.h"
#include "fake_transport.h"
#include "common/units.h"

namespace mk::engine {
namespace {

using fake::FakeTransport;
using fake::Logged;


std::string random_bytes(size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(gen() | 1);  // never a zero byte
  return s;
}

PipelineOptions pipeline_options(uint64_t request_size, unsigned requests, uint64_t bytes_in_flight) {
  PipelineOptions o;
  o.request_size = request_size;
  o.requests = requests;
  o.bytes_in_flight = bytes_in_flight;
  return o;
}

// Runs the pipeline over `queue` until it is exhausted and nothing is in flight.
void run(RequestPipeline& pipeline, FakeTransport& transport, WorkQueue& queue) {
  for (int round = 0; round < 100000; ++round) {
    pipeline.fill(queue);
    if (pipeline.in_flight() == 0 && queue.exhausted()) return;
    transport.wait(0);
  }
  ADD_FAILURE() << "the pipeline did not finish";
}

struct PipelineHarness {
  PipelineHarness(std::string source, std::string target, PipelineOptions o)
      : transport(std::move(source), std::move(target)),
        pipeline(transport, o, [this](const Chunk& c) { confirmed.push_back(c); }) {}
  FakeTransport transport;
  RequestPipeline pipeline;
  std::vector<Chunk> confirmed;
};

uint64_t total(const std::vector<Logged>& requests) {
  uint64_t n = 0;
  for (const Logged& l : requests) n += l.length;
  return n;
}

TEST(UnitRequestPipeline, DataIsReadThenWrittenAndConfirmedOnce) {
  const uint64_t size = 256 * KiB;
  std::string src = random_bytes(size, 1);
  PipelineHarness h(src, std::string(size, 'x'), pipeline_options(64 * KiB, 4, 1 << 20));
  WorkQueue q({{0, size, ExtentKind::Data}}, 64 * KiB, 1 << 20);
  run(h.pipeline, h.transport, q);
  EXPECT_EQ(h.transport.target, src);
  EXPECT_EQ(h.transport.of_kind(IoKind::Read).size(), 4u);
  EXPECT_EQ(h.transport.of_kind(IoKind::Write).size(), 4u);
  EXPECT_TRUE(h.transport.of_kind(IoKind::Zero).empty());
  EXPECT_EQ(h.pipeline.stats().bytes_written, size);
  ASSERT_EQ(h.confirmed.size(), 4u);
  uint64_t confirmed = 0;
  for (const Chunk& c : h.confirmed) confirmed += c.length;
  EXPECT_EQ(confirmed, size);
}

// A data chunk that reads as zeros: a write-zeroes on a target that can zero, nothing
// on a target known to be zero, a write of the zeros on a target that cannot zero.
TEST(UnitRequestPipeline, ZerosReadFromTheSourceBecomeWriteZeroes) {
  const uint64_t size = 128 * KiB;
  std::string src = random_bytes(size, 2);
  std::fill(src.begin() + 64 * KiB, src.end(), '\0');
  PipelineHarness h(src, std::string(size, 'x'), pipeline_options(64 * KiB, 4, 1 << 20));
  WorkQueue q({{0, size, ExtentKind::Data}}, 64 * KiB, 1 << 20);
  run(h.pipeline, h.transport, q);
  EXPECT_EQ(h.transport.target, src);
  EXPECT_EQ(h.transport.of_kind(IoKind::Write), (std::vector<Logged>{{IoKind::Write, 0, 64 * KiB}}));
  EXPECT_EQ(h.transport.of_kind(IoKind::Zero), (std::vector<Logged>{{IoKind::Zero, 64 * KiB, 64 * KiB}}));
  EXPECT_EQ(h.pipeline.stats().bytes_written, 64 * KiB);
  EXPECT_EQ(h.pipeline.stats().bytes_zeroed, 64 * KiB);
  EXPECT_EQ(h.confirmed.size(), 2u);
}

TEST(UnitRequestPipeline, ZerosReadOnAZeroTargetAreNotWritten) {
  const uint64_t size = 128 * KiB;
  std::string src(size, '\0');
  PipelineOptions o = pipeline_options(64 * KiB, 4, 1 << 20);
  o.target_is_zero = true;
  PipelineHarness h(src, std::string(size, '\0'), o);
  WorkQueue q({{0, size, ExtentKind::Data}}, 64 * KiB, 1 << 20);
  run(h.pipeline, h.transport, q);
  EXPECT_EQ(h.transport.of_kind(IoKind::Read).size(), 2u);
  EXPECT_TRUE(h.transport.of_kind(IoKind::Write).empty());
  EXPECT_TRUE(h.transport.of_kind(IoKind::Zero).empty());
  EXPECT_EQ(h.pipeline.stats().bytes_zero_data, size);
  EXPECT_EQ(h.confirmed.size(), 2u);  // confirmed all the same: progress counts them
}

TEST(UnitRequestPipeline, ZerosOnATargetThatCannotZeroAreWrittenAsData) {
  const uint64_t size = 128 * KiB;
  PipelineOptions o = pipeline_options(64 * KiB, 4, 1 << 20);
  o.target_can_zero = false;
  PipelineHarness h(std::string(size, '\0'), std::string(size, 'x'), o);
  WorkQueue q({{0, 64 * KiB, ExtentKind::Data}, {64 * KiB, 64 * KiB, ExtentKind::Zero}}, 64 * KiB, 64 * KiB);
  run(h.pipeline, h.transport, q);
  EXPECT_EQ(h.transport.target, std::string(size, '\0'));
  EXPECT_TRUE(h.transport.of_kind(IoKind::Zero).empty());
  EXPECT_EQ(total(h.transport.of_kind(IoKind::Write)), size);
  // The plan's zero range is never read.
  EXPECT_EQ(h.transport.of_kind(IoKind::Read), (std::vector<Logged>{{IoKind::Read, 0, 64 * KiB}}));
  EXPECT_EQ(h.pipeline.stats().bytes_written, size);
}

TEST(UnitRequestPipeline, PlanZerosAreZeroedWithoutReading) {
  const uint64_t size = 8 << 20;
  PipelineHarness h(random_bytes(size, 3), std::string(size, 'x'), pipeline_options(64 * KiB, 4, 1 << 20));
  WorkQueue q({{0, size, ExtentKind::Zero}}, 64 * KiB, 4 << 20);
  run(h.pipeline, h.transport, q);
  EXPECT_TRUE(h.transport.of_kind(IoKind::Read).empty());
  EXPECT_EQ(h.transport.of_kind(IoKind::Zero).size(), 2u);
  EXPECT_EQ(h.transport.target, std::string(size, '\0'));
  EXPECT_EQ(h.pipeline.stats().bytes_zeroed, size);
}

// With 8 slots but buffer room for 3 chunks, at most 3 data requests are in flight;
// write-zeroes need no buffer, so all 8 slots fill with them.
TEST(UnitRequestPipeline, RequestsAndBuffersInFlightAreBounded) {
  const uint64_t size = 2 << 20;
  {
    PipelineHarness h(random_bytes(size, 4), std::string(size, 'x'), pipeline_options(64 * KiB, 8, 3 * 64 * KiB));
    WorkQueue q({{0, size, ExtentKind::Data}}, 64 * KiB, 1 << 20);
    run(h.pipeline, h.transport, q);
    EXPECT_EQ(h.transport.max_in_flight, 3u);
    EXPECT_EQ(h.transport.target, h.transport.source);
  }
  {
    PipelineHarness h(random_bytes(size, 4), std::string(size, 'x'), pipeline_options(64 * KiB, 8, 3 * 64 * KiB));
    WorkQueue q({{0, size, ExtentKind::Zero}}, 64 * KiB, 64 * KiB);
    run(h.pipeline, h.transport, q);
    EXPECT_EQ(h.transport.max_in_flight, 8u);
  }
}

// A byte budget smaller than one request still lets one request through.
TEST(UnitRequestPipeline, OneRequestAlwaysFitsTheBudget) {
  const uint64_t size = 256 * KiB;
  PipelineHarness h(random_bytes(size, 5), std::string(size, 'x'), pipeline_options(64 * KiB, 8, 1));
  WorkQueue q({{0, size, ExtentKind::Data}}, 64 * KiB, 1 << 20);
  run(h.pipeline, h.transport, q);
  EXPECT_EQ(h.transport.max_in_flight, 1u);
  EXPECT_EQ(h.transport.target, h.transport.source);
}

// Completions in any order: every chunk lands where it belongs.
TEST(UnitRequestPipeline, CompletionsOutOfOrder) {
  const uint64_t size = 1 << 20;
  std::string src = random_bytes(size, 6);
  std::fill(src.begin() + 128 * KiB, src.begin() + 256 * KiB, '\0');
  PipelineHarness h(src, random_bytes(size, 7), pipeline_options(32 * KiB, 16, 1 << 20));
  h.transport.reverse = true;
  WorkQueue q({{0, size, ExtentKind::Data}}, 32 * KiB, 1 << 20);
  run(h.pipeline, h.transport, q);
  EXPECT_EQ(h.transport.target, src);
  EXPECT_EQ(h.confirmed.size(), size / (32 * KiB));
}

// The pipeline does not retry: a failure the transport reports ends the copy with the
// request, its offset and the cause.
TEST(UnitRequestPipeline, AFailureReportedByTheTransportEndsTheCopy) {
  const uint64_t size = 256 * KiB;
  PipelineHarness h(random_bytes(size, 8), std::string(size, 'x'), pipeline_options(64 * KiB, 4, 1 << 20));
  h.transport.fail = [](const IoRequest& r) { return r.kind == IoKind::Write && r.offset == 128 * KiB ? ENOSPC : 0; };
  WorkQueue q({{0, size, ExtentKind::Data}}, 64 * KiB, 1 << 20);
  try {
    run(h.pipeline, h.transport, q);
    FAIL() << "the failed write went unnoticed";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "write of 65536 bytes at offset 131072 failed: No space left on device");
  }
  for (const Chunk& c : h.confirmed) EXPECT_NE(c.start, 128 * KiB);
}

}  // namespace
}  // namespace mk::engine
