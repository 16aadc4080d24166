// Unit tests for src/engine/work_queue.h: cutting the plan into aligned chunks, redone
// ranges, the first failure, and handing out chunks to several threads.
#include "engine/work_queue.h"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>
#include <vector>
#include "common/units.h"

namespace mk::engine {
namespace {


std::vector<Chunk> drain(WorkQueue& q) {
  std::vector<Chunk> out;
  while (auto c = q.next()) out.push_back(*c);
  return out;
}

TEST(UnitWorkQueue, ChunksStayWithinTheirStepAndEntry) {
  WorkQueue q({{MiB / 2, 3 * MiB, ExtentKind::Data}, {4 * MiB, MiB, ExtentKind::Zero}}, MiB, 4 * MiB);
  std::vector<Chunk> expected = {{MiB / 2, MiB / 2, ExtentKind::Data},
                                 {MiB, MiB, ExtentKind::Data},
                                 {2 * MiB, MiB, ExtentKind::Data},
                                 {3 * MiB, MiB / 2, ExtentKind::Data},
                                 {4 * MiB, MiB, ExtentKind::Zero}};
  EXPECT_EQ(drain(q), expected);
  EXPECT_TRUE(q.exhausted());
}

TEST(UnitWorkQueue, ZeroRangesUseTheirOwnStep) {
  WorkQueue q({{0, 10 * MiB, ExtentKind::Zero}}, MiB, 4 * MiB);
  std::vector<Chunk> expected = {{0, 4 * MiB, ExtentKind::Zero},
                                 {4 * MiB, 4 * MiB, ExtentKind::Zero},
                                 {8 * MiB, 2 * MiB, ExtentKind::Zero}};
  EXPECT_EQ(drain(q), expected);
}

TEST(UnitWorkQueue, EmptyPlanIsExhaustedAtOnce) {
  WorkQueue q({}, MiB, MiB);
  EXPECT_TRUE(q.exhausted());
  EXPECT_FALSE(q.next().has_value());
}

TEST(UnitWorkQueue, RedoneRangesComeFirstCutAtTheStep) {
  WorkQueue q({{0, 4 * MiB, ExtentKind::Data}}, MiB, 4 * MiB);
  ASSERT_EQ(q.next(), (Chunk{0, MiB, ExtentKind::Data}));
  q.redo({MiB / 2, 2 * MiB, ExtentKind::Data});  // merged by durability across steps
  q.redo({0, 6 * MiB, ExtentKind::Zero});
  EXPECT_FALSE(q.exhausted());
  std::vector<Chunk> expected = {{MiB / 2, MiB / 2, ExtentKind::Data},
                                 {MiB, MiB, ExtentKind::Data},
                                 {2 * MiB, MiB / 2, ExtentKind::Data},
                                 {0, 4 * MiB, ExtentKind::Zero},
                                 {4 * MiB, 2 * MiB, ExtentKind::Zero},
                                 {MiB, MiB, ExtentKind::Data},  // then the plan goes on
                                 {2 * MiB, MiB, ExtentKind::Data},
                                 {3 * MiB, MiB, ExtentKind::Data}};
  EXPECT_EQ(drain(q), expected);
  EXPECT_TRUE(q.exhausted());
}

TEST(UnitWorkQueue, RedoAfterExhaustionMakesWorkAgain) {
  WorkQueue q({{0, MiB, ExtentKind::Data}}, MiB, MiB);
  drain(q);
  ASSERT_TRUE(q.exhausted());
  q.redo({0, MiB, ExtentKind::Data});
  EXPECT_FALSE(q.exhausted());
  EXPECT_EQ(q.next(), (Chunk{0, MiB, ExtentKind::Data}));
  EXPECT_TRUE(q.exhausted());
}

TEST(UnitWorkQueue, TheFirstFailureIsKept) {
  WorkQueue q({{0, MiB, ExtentKind::Data}}, MiB, MiB);
  EXPECT_FALSE(q.failed());
  q.fail("target: write failed");
  q.fail("copy stopped");
  EXPECT_TRUE(q.failed());
  EXPECT_EQ(q.error(), "target: write failed");
}

// Several workers take chunks at once: each byte of the plan is handed out exactly once.
TEST(UnitWorkQueue, ThreadsGetDisjointChunksCoveringThePlan) {
  const uint64_t size = 64 * MiB;
  WorkQueue q({{0, size / 2, ExtentKind::Data}, {size / 2, size / 2, ExtentKind::Zero}}, 64 * 1024, MiB);
  std::mutex mu;
  std::vector<Chunk> all;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      std::vector<Chunk> mine = drain(q);
      std::lock_guard lock(mu);
      all.insert(all.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  std::sort(all.begin(), all.end(), [](const Chunk& a, const Chunk& b) { return a.start < b.start; });
  uint64_t pos = 0;
  for (const Chunk& c : all) {
    ASSERT_EQ(c.start, pos);
    EXPECT_EQ(c.kind, c.start < size / 2 ? ExtentKind::Data : ExtentKind::Zero);
    pos = c.end();
  }
  EXPECT_EQ(pos, size);
}

}  // namespace
}  // namespace mk::engine
