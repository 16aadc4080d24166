// Unit tests for src/common/range.h: normalize, intersect, subtract, total_length.
#include "common/range.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace mk {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// True when `r` is sorted, has no empty ranges and no two ranges overlap or touch.
bool is_normalised(const RangeList& r) {
  for (size_t i = 0; i < r.size(); ++i) {
    if (r[i].length == 0) return false;
    if (i > 0 && r[i].start <= r[i - 1].end()) return false;
  }
  return true;
}

// ---------------------------------------------------------------- normalize

TEST(UnitRange, EndIsStartPlusLength) {
  EXPECT_EQ((Range{10, 5}.end()), 15u);
  EXPECT_EQ((Range{0, 0}.end()), 0u);
  EXPECT_EQ((Range{kMax - 7, 7}.end()), kMax);
}

TEST(UnitRange, NormalizeEmptyList) { EXPECT_TRUE(normalize({}).empty()); }

TEST(UnitRange, NormalizeDropsEmptyRanges) {
  EXPECT_TRUE(normalize({{0, 0}, {100, 0}, {5, 0}}).empty());
  EXPECT_EQ(normalize({{10, 0}, {20, 5}, {3, 0}}), (RangeList{{20, 5}}));
}

TEST(UnitRange, NormalizeEmptyRangeInsideGapDoesNotBridgeIt) {
  // [0,10) and [20,30) stay apart although an empty range sits between and at the edges.
  EXPECT_EQ(normalize({{0, 10}, {10, 0}, {15, 0}, {20, 0}, {20, 10}}),
            (RangeList{{0, 10}, {20, 10}}));
}

TEST(UnitRange, NormalizeSortsUnsortedDisjointRanges) {
  EXPECT_EQ(normalize({{300, 10}, {0, 10}, {100, 10}}),
            (RangeList{{0, 10}, {100, 10}, {300, 10}}));
}

TEST(UnitRange, NormalizeMergesOverlapping) {
  EXPECT_EQ(normalize({{0, 10}, {5, 10}}), (RangeList{{0, 15}}));
  EXPECT_EQ(normalize({{5, 10}, {0, 10}}), (RangeList{{0, 15}}));
}

TEST(UnitRange, NormalizeMergesContainedRange) {
  EXPECT_EQ(normalize({{0, 100}, {10, 5}}), (RangeList{{0, 100}}));
  EXPECT_EQ(normalize({{10, 5}, {0, 100}}), (RangeList{{0, 100}}));
  // A later, shorter range must not shrink the merged one.
  EXPECT_EQ(normalize({{0, 100}, {50, 10}, {90, 5}}), (RangeList{{0, 100}}));
}

TEST(UnitRange, NormalizeMergesAdjacent) {
  EXPECT_EQ(normalize({{0, 10}, {10, 10}}), (RangeList{{0, 20}}));
  EXPECT_EQ(normalize({{20, 10}, {10, 10}, {0, 10}}), (RangeList{{0, 30}}));
}

TEST(UnitRange, NormalizeKeepsOneByteGap) {
  EXPECT_EQ(normalize({{0, 10}, {11, 10}}), (RangeList{{0, 10}, {11, 10}}));
}

TEST(UnitRange, NormalizeDuplicates) {
  EXPECT_EQ(normalize({{7, 3}, {7, 3}, {7, 3}}), (RangeList{{7, 3}}));
}

TEST(UnitRange, NormalizeSameStartDifferentLengths) {
  EXPECT_EQ(normalize({{0, 5}, {0, 50}, {0, 20}}), (RangeList{{0, 50}}));
}

TEST(UnitRange, NormalizeChainOfOverlapsAndGaps) {
  RangeList in{{50, 10}, {0, 5}, {4, 3}, {58, 2}, {60, 1}, {100, 1}, {7, 1}, {99, 1}};
  EXPECT_EQ(normalize(in), (RangeList{{0, 8}, {50, 11}, {99, 2}}));
}

TEST(UnitRange, NormalizeUpToTopOfAddressSpace) {
  EXPECT_EQ(normalize({{kMax - 10, 10}, {kMax - 20, 10}}), (RangeList{{kMax - 20, 20}}));
}

TEST(UnitRange, NormalizeIsIdempotent) {
  RangeList once = normalize({{9, 4}, {1, 2}, {3, 1}, {20, 0}, {12, 1}});
  EXPECT_TRUE(is_normalised(once));
  EXPECT_EQ(normalize(once), once);
}

// ---------------------------------------------------------------- intersect

TEST(UnitRange, IntersectWithEmpty) {
  EXPECT_TRUE(intersect({}, {}).empty());
  EXPECT_TRUE(intersect({{0, 10}}, {}).empty());
  EXPECT_TRUE(intersect({}, {{0, 10}}).empty());
}

TEST(UnitRange, IntersectDisjoint) {
  EXPECT_TRUE(intersect({{0, 10}}, {{20, 10}}).empty());
  EXPECT_TRUE(intersect({{20, 10}}, {{0, 10}}).empty());
}

TEST(UnitRange, IntersectAdjacentIsEmpty) {
  EXPECT_TRUE(intersect({{0, 10}}, {{10, 10}}).empty());
  EXPECT_TRUE(intersect({{10, 10}}, {{0, 10}}).empty());
}

TEST(UnitRange, IntersectPartialOverlap) {
  EXPECT_EQ(intersect({{0, 10}}, {{5, 10}}), (RangeList{{5, 5}}));
  EXPECT_EQ(intersect({{5, 10}}, {{0, 10}}), (RangeList{{5, 5}}));
}

TEST(UnitRange, IntersectContainment) {
  EXPECT_EQ(intersect({{0, 100}}, {{10, 5}}), (RangeList{{10, 5}}));
  EXPECT_EQ(intersect({{10, 5}}, {{0, 100}}), (RangeList{{10, 5}}));
  EXPECT_EQ(intersect({{3, 7}}, {{3, 7}}), (RangeList{{3, 7}}));
}

TEST(UnitRange, IntersectOneRangeAgainstMany) {
  RangeList many{{0, 5}, {10, 5}, {20, 5}, {30, 5}};
  EXPECT_EQ(intersect({{3, 25}}, many), (RangeList{{3, 2}, {10, 5}, {20, 5}}));
  EXPECT_EQ(intersect(many, {{3, 25}}), (RangeList{{3, 2}, {10, 5}, {20, 5}}));
}

TEST(UnitRange, IntersectManyVsMany) {
  RangeList a{{0, 10}, {20, 10}, {40, 10}, {60, 10}};
  RangeList b{{5, 20}, {28, 14}, {45, 1}, {47, 30}};
  EXPECT_EQ(intersect(a, b), (RangeList{{5, 5}, {20, 5}, {28, 2}, {40, 2}, {45, 1}, {47, 3}, {60, 10}}));
  EXPECT_EQ(intersect(b, a), intersect(a, b));
}

// ---------------------------------------------------------------- subtract

TEST(UnitRange, SubtractNothing) {
  EXPECT_EQ(subtract({{0, 10}, {20, 5}}, {}), (RangeList{{0, 10}, {20, 5}}));
  EXPECT_TRUE(subtract({}, {{0, 10}}).empty());
}

TEST(UnitRange, SubtractHoleAtStart) {
  EXPECT_EQ(subtract({{0, 100}}, {{0, 10}}), (RangeList{{10, 90}}));
}

TEST(UnitRange, SubtractHoleInMiddle) {
  EXPECT_EQ(subtract({{0, 100}}, {{40, 10}}), (RangeList{{0, 40}, {50, 50}}));
}

TEST(UnitRange, SubtractHoleAtEnd) {
  EXPECT_EQ(subtract({{0, 100}}, {{90, 10}}), (RangeList{{0, 90}}));
}

TEST(UnitRange, SubtractHoleOverlappingEdges) {
  EXPECT_EQ(subtract({{10, 90}}, {{0, 20}}), (RangeList{{20, 80}}));
  EXPECT_EQ(subtract({{10, 90}}, {{90, 50}}), (RangeList{{10, 80}}));
}

TEST(UnitRange, SubtractFullCover) {
  EXPECT_TRUE(subtract({{0, 100}}, {{0, 100}}).empty());
  EXPECT_TRUE(subtract({{10, 10}}, {{0, 100}}).empty());
  EXPECT_TRUE(subtract({{10, 10}, {50, 5}}, {{0, 100}}).empty());
}

TEST(UnitRange, SubtractDisjoint) {
  EXPECT_EQ(subtract({{10, 10}}, {{0, 5}, {30, 5}}), (RangeList{{10, 10}}));
  EXPECT_EQ(subtract({{10, 10}}, {{0, 10}, {20, 5}}), (RangeList{{10, 10}}));  // adjacent both sides
}

TEST(UnitRange, SubtractSeveralHolesInOneRange) {
  EXPECT_EQ(subtract({{0, 100}}, {{0, 5}, {10, 5}, {50, 1}, {99, 1}}),
            (RangeList{{5, 5}, {15, 35}, {51, 48}}));
}

TEST(UnitRange, SubtractOneHoleSpanningSeveralRanges) {
  EXPECT_EQ(subtract({{0, 10}, {20, 10}, {40, 10}}, {{5, 40}}), (RangeList{{0, 5}, {45, 5}}));
}

TEST(UnitRange, SubtractManyVsMany) {
  RangeList a{{0, 10}, {20, 10}, {40, 10}, {60, 10}, {80, 10}};
  RangeList b{{5, 20}, {28, 14}, {45, 1}, {47, 30}, {85, 100}};
  EXPECT_EQ(subtract(a, b), (RangeList{{0, 5}, {25, 3}, {42, 3}, {46, 1}, {80, 5}}));
  EXPECT_EQ(subtract(b, a), (RangeList{{10, 10}, {30, 10}, {50, 10}, {70, 7}, {90, 95}}));
}

// ---------------------------------------------------------------- total_length

TEST(UnitRange, TotalLength) {
  EXPECT_EQ(total_length({}), 0u);
  EXPECT_EQ(total_length({{0, 0}}), 0u);
  EXPECT_EQ(total_length({{0, 10}, {100, 5}, {200, 1}}), 16u);
  EXPECT_EQ(total_length({{0, uint64_t{1} << 40}, {uint64_t{1} << 41, 7}}), (uint64_t{1} << 40) + 7);
}

// ---------------------------------------------------------------- property test

// A small disk as one flag per byte: the obviously correct model.
constexpr size_t kDisk = 200;
using Bitmap = std::vector<bool>;

Bitmap to_bitmap(const RangeList& ranges) {
  Bitmap b(kDisk, false);
  for (const Range& r : ranges) {
    for (uint64_t i = r.start; i < r.end(); ++i) b.at(i) = true;
  }
  return b;
}

// The maximal runs of set bytes: the unique normalised list for the model.
RangeList runs(const Bitmap& b) {
  RangeList out;
  for (size_t i = 0; i < b.size();) {
    if (!b[i]) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < b.size() && b[j]) ++j;
    out.push_back({i, j - i});
    i = j;
  }
  return out;
}

RangeList random_ranges(std::mt19937_64& rng) {
  std::uniform_int_distribution<int> count(0, 8);
  std::uniform_int_distribution<uint64_t> start(0, kDisk - 1);
  std::uniform_int_distribution<int> shape(0, 3);
  RangeList out;
  int n = count(rng);
  for (int i = 0; i < n; ++i) {
    uint64_t s = start(rng);
    uint64_t max_len = kDisk - s;
    // Mostly short ranges (many gaps and touches), some empty, some long.
    uint64_t len;
    switch (shape(rng)) {
      case 0: len = 0; break;
      case 1: len = std::uniform_int_distribution<uint64_t>(0, max_len)(rng); break;
      default: len = std::uniform_int_distribution<uint64_t>(1, std::min<uint64_t>(max_len, 12))(rng);
    }
    out.push_back({s, len});
  }
  return out;
}

TEST(UnitRange, PropertyMatchesBitmapModel) {
  std::mt19937_64 rng(20261126);
  for (int iter = 0; iter < 20000; ++iter) {
    RangeList raw_a = random_ranges(rng);
    RangeList raw_b = random_ranges(rng);
    Bitmap ma = to_bitmap(raw_a), mb = to_bitmap(raw_b);
    Bitmap m_and(kDisk), m_minus(kDisk);
    size_t pop = 0;
    for (size_t i = 0; i < kDisk; ++i) {
      m_and[i] = ma[i] && mb[i];
      m_minus[i] = ma[i] && !mb[i];
      pop += ma[i];
    }

    RangeList a = normalize(raw_a);
    RangeList b = normalize(raw_b);
    ASSERT_TRUE(is_normalised(a)) << "iteration " << iter;
    ASSERT_EQ(a, runs(ma)) << "normalize, iteration " << iter;
    ASSERT_EQ(b, runs(mb)) << "normalize, iteration " << iter;
    ASSERT_EQ(total_length(a), pop) << "total_length, iteration " << iter;

    RangeList i_ab = intersect(a, b);
    ASSERT_TRUE(is_normalised(i_ab)) << "iteration " << iter;
    ASSERT_EQ(i_ab, runs(m_and)) << "intersect, iteration " << iter;
    ASSERT_EQ(intersect(b, a), i_ab) << "intersect commutes, iteration " << iter;

    RangeList s_ab = subtract(a, b);
    ASSERT_TRUE(is_normalised(s_ab)) << "iteration " << iter;
    ASSERT_EQ(s_ab, runs(m_minus)) << "subtract, iteration " << iter;

    // a = (a ∩ b) ∪ (a − b), and the two parts are disjoint.
    ASSERT_EQ(total_length(i_ab) + total_length(s_ab), total_length(a)) << "iteration " << iter;
    RangeList joined = i_ab;
    joined.insert(joined.end(), s_ab.begin(), s_ab.end());
    ASSERT_EQ(normalize(joined), a) << "iteration " << iter;
    ASSERT_TRUE(intersect(i_ab, s_ab).empty()) << "iteration " << iter;
  }
}

}  // namespace
}  // namespace mk
