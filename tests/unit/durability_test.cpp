// Unit tests for src/engine/durability.h over an in-memory transport and a real
// checkpoint file: what a flush covers, what reaches the checkpoint, and what is
// copied again after a failed flush or a replaced target connection.
#include "engine/durability.h"

#include <gtest/gtest.h>

#include <cerrno>

#include "common/error.h"
#include "fake_transport.h"
#include "unit_temp_dir.h"
#include "common/units.h"

namespace mk::engine {
namespace {

using namespace std::chrono_literals;
using fake::FakeTransport;
using fake::Logged;


Chunk data(uint64_t offset, uint64_t length) { return {offset, length, ExtentKind::Data}; }
Chunk zero(uint64_t offset, uint64_t length) { return {offset, length, ExtentKind::Zero}; }

// A Durability with a fake clock and a checkpoint in a temporary directory.
struct DurabilityHarness {
  explicit DurabilityHarness(bool with_checkpoint = true, bool flush_at_end = true, bool can_flush = true)
      : transport(std::string(1 << 20, 'x'), std::string(1 << 20, 'x')) {
    if (with_checkpoint) checkpoint = Checkpoint::open(dir.file("copy.checkpoint"), {{"plan", "p"}}, 1 << 20);
    DurabilityOptions o;
    o.flush_at_end = flush_at_end;
    o.target_can_flush = can_flush;
    o.checkpoint = checkpoint.get();
    o.checkpoint_interval = 1s;
    o.max_flush_failures = 2;
    o.now = [this] { return Clock::time_point() + clock; };
    durability = std::make_unique<Durability>(transport, o, "target nbd://dst/disk",
                                              [this](const Chunk& c) { redone.push_back(c); });
  }

  // Ranges the checkpoint file holds (read as a resumed copy would read it).
  RangeList recorded() {
    return Checkpoint::open(dir.file("copy.checkpoint"), {{"plan", "p"}}, 1 << 20)->completed();
  }

  unit::TempDir dir;
  std::chrono::milliseconds clock{0};
  FakeTransport transport;
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<Durability> durability;
  std::vector<Chunk> redone;
};

TEST(UnitDurability, FinalFlushMakesTheConfirmedRangesDurable) {
  DurabilityHarness h;
  h.durability->confirmed(data(0, 64 * KiB));
  h.durability->confirmed(data(64 * KiB, 64 * KiB));  // merges with the previous one
  h.durability->confirmed(zero(128 * KiB, 64 * KiB));
  h.durability->confirmed(data(512 * KiB, 64 * KiB));
  ASSERT_TRUE(h.durability->start_final_flush());
  EXPECT_TRUE(h.durability->flushing());
  EXPECT_TRUE(h.recorded().empty()) << "recorded before the flush completed";
  h.transport.wait(0);
  EXPECT_FALSE(h.durability->flushing());
  EXPECT_EQ(h.transport.of_kind(IoKind::Flush).size(), 1u);
  EXPECT_FALSE(h.durability->start_final_flush()) << "nothing is left to flush";
  EXPECT_EQ(h.recorded(), (RangeList{{0, 192 * KiB}, {512 * KiB, 64 * KiB}}));
  EXPECT_TRUE(h.redone.empty());
}

TEST(UnitDurability, NothingConfirmedNeedsNoFlush) {
  DurabilityHarness h;
  EXPECT_FALSE(h.durability->start_final_flush());
  EXPECT_TRUE(h.transport.log.empty());
}

TEST(UnitDurability, NoFlushWhenNeitherWanted) {
  DurabilityHarness h(false, false);
  h.durability->confirmed(data(0, 64 * KiB));
  EXPECT_FALSE(h.durability->start_final_flush());
  h.clock = 10s;
  h.durability->tick();
  EXPECT_TRUE(h.transport.log.empty());
}

TEST(UnitDurability, CheckpointFlushesComeEveryInterval) {
  DurabilityHarness h;
  h.durability->confirmed(data(0, 64 * KiB));
  h.clock = 999ms;
  h.durability->tick();
  EXPECT_EQ(h.transport.pending(), 0u);
  h.clock = 1000ms;
  h.durability->tick();
  EXPECT_EQ(h.transport.pending(), 1u);
  h.durability->tick();  // one at a time
  EXPECT_EQ(h.transport.pending(), 1u);
  h.clock = 1500ms;
  h.transport.wait(0);
  h.durability->confirmed(data(64 * KiB, 64 * KiB));
  h.clock = 2400ms;  // the interval counts from the end of the last flush
  h.durability->tick();
  EXPECT_EQ(h.transport.pending(), 0u);
  h.clock = 2500ms;
  h.durability->tick();
  EXPECT_EQ(h.transport.pending(), 1u);
  h.transport.wait(0);
  EXPECT_EQ(h.recorded(), (RangeList{{0, 128 * KiB}}));
}

TEST(UnitDurability, WithoutACheckpointOnlyTheFinalFlush) {
  DurabilityHarness h(false);
  h.durability->confirmed(data(0, 64 * KiB));
  h.clock = 10s;
  h.durability->tick();
  EXPECT_EQ(h.transport.pending(), 0u);
  EXPECT_TRUE(h.durability->start_final_flush());
  h.transport.wait(0);
  EXPECT_EQ(h.transport.of_kind(IoKind::Flush).size(), 1u);
}

// A flush covers what was confirmed before it started: ranges confirmed meanwhile wait
// for the next flush and are not recorded by this one.
TEST(UnitDurability, RangesConfirmedDuringAFlushWaitForTheNext) {
  DurabilityHarness h;
  h.durability->confirmed(data(0, 64 * KiB));
  ASSERT_TRUE(h.durability->start_final_flush());
  h.durability->confirmed(data(64 * KiB, 64 * KiB));
  h.transport.wait(0);
  EXPECT_EQ(h.recorded(), (RangeList{{0, 64 * KiB}}));
}

TEST(UnitDurability, FailedFlushRedoesItsRangesOnly) {
  DurabilityHarness h;
  h.transport.fail = [](const IoRequest& r) { return r.kind == IoKind::Flush ? EIO : 0; };
  h.durability->confirmed(data(0, 64 * KiB));
  h.durability->confirmed(zero(64 * KiB, 1 << 19));
  ASSERT_TRUE(h.durability->start_final_flush());
  h.durability->confirmed(data(1 << 19, 64 * KiB));  // after the flush started: not its range
  h.transport.wait(0);
  EXPECT_EQ(h.redone, (std::vector<Chunk>{data(0, 64 * KiB), zero(64 * KiB, 1 << 19)}));
  EXPECT_TRUE(h.recorded().empty());
}

TEST(UnitDurability, RepeatedFlushFailuresEndTheCopy) {
  DurabilityHarness h;
  h.transport.fail = [](const IoRequest& r) { return r.kind == IoKind::Flush ? EIO : 0; };
  for (int attempt = 1; attempt <= 2; ++attempt) {
    h.durability->confirmed(data(0, 64 * KiB));
    ASSERT_TRUE(h.durability->start_final_flush());
    h.transport.wait(0);
  }
  h.durability->confirmed(data(0, 64 * KiB));
  ASSERT_TRUE(h.durability->start_final_flush());
  try {
    h.transport.wait(0);
    FAIL() << "a third failed flush went unnoticed";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "target nbd://dst/disk: flush failed after 3 attempts: Input/output error");
  }
}

TEST(UnitDurability, ASuccessfulFlushResetsTheFailureCount) {
  DurabilityHarness h;
  int flushes = 0;
  h.transport.fail = [&](const IoRequest& r) { return r.kind == IoKind::Flush && flushes++ % 2 == 0 ? EIO : 0; };
  for (int i = 0; i < 6; ++i) {  // fail, succeed, fail, succeed, ...
    h.durability->confirmed(data(0, 64 * KiB));
    ASSERT_TRUE(h.durability->start_final_flush());
    EXPECT_NO_THROW(h.transport.wait(0));
  }
}

// The target connection was replaced: every unflushed range is copied again, and the
// flush that was in flight on the old connection records nothing, even if it succeeds.
TEST(UnitDurability, ReplacedTargetRedoesEverythingUnflushed) {
  DurabilityHarness h;
  h.durability->confirmed(data(0, 64 * KiB));
  ASSERT_TRUE(h.durability->start_final_flush());
  h.durability->confirmed(data(128 * KiB, 64 * KiB));
  h.durability->target_replaced();
  EXPECT_EQ(h.redone, (std::vector<Chunk>{data(128 * KiB, 64 * KiB), data(0, 64 * KiB)}));
  EXPECT_TRUE(h.durability->flushing());  // the old flush is still out
  h.transport.wait(0);
  EXPECT_FALSE(h.durability->flushing());
  EXPECT_FALSE(h.durability->start_final_flush());
  EXPECT_TRUE(h.recorded().empty());
}

TEST(UnitDurability, TargetWithoutFlushRecordsAtOnce) {
  DurabilityHarness h(true, true, false);
  h.durability->confirmed(data(0, 64 * KiB));
  ASSERT_TRUE(h.durability->start_final_flush());
  EXPECT_FALSE(h.durability->flushing());
  EXPECT_TRUE(h.transport.log.empty());
  EXPECT_EQ(h.recorded(), (RangeList{{0, 64 * KiB}}));
}

// What the fake target saw: the flush covered the writes completed before it.
TEST(UnitDurability, FlushIsSentThroughTheTransport) {
  DurabilityHarness h;
  std::vector<char> buf(64 * KiB, 'a');
  IoRequest write;
  write.kind = IoKind::Write;
  write.buf = buf.data();
  write.length = buf.size();
  write.on_done = [](IoRequest&) {};
  h.transport.submit(write);
  h.transport.wait(0);
  h.durability->confirmed(data(0, 64 * KiB));
  ASSERT_TRUE(h.durability->start_final_flush());
  h.transport.wait(0);
  ASSERT_EQ(h.transport.flushed_sets.size(), 1u);
  EXPECT_EQ(h.transport.flushed_sets[0], (std::vector<Logged>{{IoKind::Write, 0, 64 * KiB}}));
}

}  // namespace
}  // namespace mk::engine
