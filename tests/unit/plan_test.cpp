// Unit tests for make_plan() and Plan::digest() (src/engine/plan.h) and plan_totals()
// (src/engine/copier.h): pure logic, no NBD server.
#include "engine/plan.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "engine/copier.h"
#include "common/units.h"

namespace mk::engine {
namespace {

using K = ExtentKind;

// Checks what every plan must satisfy: entries sorted, non-empty, non-overlapping, their
// union is the scope, and the byte counts add up.
void expect_consistent(const Plan& p, const RangeList& scope) {
  RangeList covered;
  uint64_t data = 0, zero = 0;
  for (size_t i = 0; i < p.entries.size(); ++i) {
    const PlanEntry& e = p.entries[i];
    EXPECT_GT(e.length, 0u) << "entry " << i;
    if (i > 0) {
      EXPECT_GE(e.start, p.entries[i - 1].end()) << "entry " << i << " overlaps or is unsorted";
    }
    EXPECT_LE(e.end(), p.disk_size) << "entry " << i;
    (e.kind == K::Data ? data : zero) += e.length;
    covered.push_back({e.start, e.length});
  }
  EXPECT_EQ(normalize(covered), scope);
  EXPECT_EQ(p.data_bytes, data);
  EXPECT_EQ(p.zero_bytes, zero);
  EXPECT_EQ(p.scope_bytes, total_length(scope));
  EXPECT_EQ(p.data_bytes + p.zero_bytes, p.scope_bytes);
}

TEST(UnitPlan, FullScopeNoZeroExtentsIsAllData) {
  Plan p = make_plan(4 * MiB, {{0, 4 * MiB}}, {}, true);
  EXPECT_EQ(p.disk_size, 4 * MiB);
  EXPECT_TRUE(p.block_status);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{0, 4 * MiB, K::Data}}));
  EXPECT_EQ(p.scope_bytes, 4 * MiB);
  EXPECT_EQ(p.data_bytes, 4 * MiB);
  EXPECT_EQ(p.zero_bytes, 0u);
}

TEST(UnitPlan, NoBlockStatusIsAllData) {
  Plan p = make_plan(10 * MiB, {{0, 10 * MiB}}, {}, false);
  EXPECT_FALSE(p.block_status);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{0, 10 * MiB, K::Data}}));
  EXPECT_EQ(p.data_bytes, 10 * MiB);
  EXPECT_EQ(p.zero_bytes, 0u);
  EXPECT_EQ(p.scope_bytes, 10 * MiB);
}

TEST(UnitPlan, FullScopeWithZeroExtents) {
  // Disk: data [0,1M) zero [1M,3M) data [3M,4M) zero [4M,8M) (a zero tail).
  Plan p = make_plan(8 * MiB, {{0, 8 * MiB}}, {{1 * MiB, 2 * MiB}, {4 * MiB, 4 * MiB}}, true);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{0, MiB, K::Data},
                                               {MiB, 2 * MiB, K::Zero},
                                               {3 * MiB, MiB, K::Data},
                                               {4 * MiB, 4 * MiB, K::Zero}}));
  EXPECT_EQ(p.scope_bytes, 8 * MiB);
  EXPECT_EQ(p.data_bytes, 2 * MiB);
  EXPECT_EQ(p.zero_bytes, 6 * MiB);
  expect_consistent(p, {{0, 8 * MiB}});
}

TEST(UnitPlan, WholeDiskZero) {
  Plan p = make_plan(4 * MiB, {{0, 4 * MiB}}, {{0, 4 * MiB}}, true);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{0, 4 * MiB, K::Zero}}));
  EXPECT_EQ(p.data_bytes, 0u);
  EXPECT_EQ(p.zero_bytes, 4 * MiB);
  EXPECT_EQ(p.scope_bytes, 4 * MiB);
}

TEST(UnitPlan, ChangedAreasCrossingDataZeroBoundaries) {
  // Disk 16 MiB: zero extents [2M,6M) and [10M,12M).
  // Changed areas: [1M,3M) crosses data->zero, [5M,7M) crosses zero->data,
  // [9M,13M) spans a whole zero extent with data on both sides, [14M,15M) is pure data.
  RangeList zeros{{2 * MiB, 4 * MiB}, {10 * MiB, 2 * MiB}};
  RangeList scope{{MiB, 2 * MiB}, {5 * MiB, 2 * MiB}, {9 * MiB, 4 * MiB}, {14 * MiB, MiB}};
  Plan p = make_plan(16 * MiB, scope, zeros, true);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{MiB, MiB, K::Data},
                                               {2 * MiB, MiB, K::Zero},
                                               {5 * MiB, MiB, K::Zero},
                                               {6 * MiB, MiB, K::Data},
                                               {9 * MiB, MiB, K::Data},
                                               {10 * MiB, 2 * MiB, K::Zero},
                                               {12 * MiB, MiB, K::Data},
                                               {14 * MiB, MiB, K::Data}}));
  EXPECT_EQ(p.scope_bytes, 9 * MiB);
  EXPECT_EQ(p.data_bytes, 5 * MiB);
  EXPECT_EQ(p.zero_bytes, 4 * MiB);
  expect_consistent(p, scope);
}

TEST(UnitPlan, ZeroExtentsOutsideScopeAreIgnored) {
  Plan p = make_plan(8 * MiB, {{2 * MiB, MiB}}, {{0, MiB}, {4 * MiB, 4 * MiB}}, true);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{2 * MiB, MiB, K::Data}}));
  EXPECT_EQ(p.scope_bytes, MiB);
  EXPECT_EQ(p.data_bytes, MiB);
  EXPECT_EQ(p.zero_bytes, 0u);
}

TEST(UnitPlan, ChangedAreaInsideZeroExtent) {
  Plan p = make_plan(8 * MiB, {{3 * MiB, 4096}}, {{0, 8 * MiB}}, true);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{3 * MiB, 4096, K::Zero}}));
  EXPECT_EQ(p.data_bytes, 0u);
  EXPECT_EQ(p.zero_bytes, 4096u);
}

TEST(UnitPlan, EmptyScope) {
  Plan p = make_plan(8 * MiB, {}, {{0, MiB}}, true);
  EXPECT_EQ(p.disk_size, 8 * MiB);
  EXPECT_TRUE(p.entries.empty());
  EXPECT_EQ(p.scope_bytes, 0u);
  EXPECT_EQ(p.data_bytes, 0u);
  EXPECT_EQ(p.zero_bytes, 0u);
}

TEST(UnitPlan, EmptyDisk) {
  Plan p = make_plan(0, {}, {}, false);
  EXPECT_TRUE(p.entries.empty());
  EXPECT_EQ(p.scope_bytes, 0u);
}

TEST(UnitPlan, FirstAndLastByte) {
  const uint64_t size = 8 * MiB;
  // Only the first and the last byte changed; the last one lies in a zero extent.
  RangeList scope{{0, 1}, {size - 1, 1}};
  Plan p = make_plan(size, scope, {{size - 4096, 4096}}, true);
  EXPECT_EQ(p.entries, (std::vector<PlanEntry>{{0, 1, K::Data}, {size - 1, 1, K::Zero}}));
  EXPECT_EQ(p.scope_bytes, 2u);
  EXPECT_EQ(p.data_bytes, 1u);
  EXPECT_EQ(p.zero_bytes, 1u);

  // A one-byte zero extent at the very start, data up to the very end.
  Plan q = make_plan(size, {{0, size}}, {{0, 1}}, true);
  EXPECT_EQ(q.entries, (std::vector<PlanEntry>{{0, 1, K::Zero}, {1, size - 1, K::Data}}));
  // And a one-byte zero extent at the very end.
  Plan r = make_plan(size, {{0, size}}, {{size - 1, 1}}, true);
  EXPECT_EQ(r.entries, (std::vector<PlanEntry>{{0, size - 1, K::Data}, {size - 1, 1, K::Zero}}));
}

TEST(UnitPlan, PropertyRandomScopesAndZeros) {
  std::mt19937_64 rng(42);
  const uint64_t disk = 4096;
  auto random_list = [&] {
    RangeList l;
    int n = std::uniform_int_distribution<int>(0, 6)(rng);
    for (int i = 0; i < n; ++i) {
      uint64_t s = std::uniform_int_distribution<uint64_t>(0, disk - 1)(rng);
      uint64_t len = std::uniform_int_distribution<uint64_t>(1, std::min<uint64_t>(disk - s, 700))(rng);
      l.push_back({s, len});
    }
    return normalize(l);
  };
  for (int iter = 0; iter < 3000; ++iter) {
    RangeList scope = random_list();
    RangeList zeros = random_list();
    Plan p = make_plan(disk, scope, zeros, true);
    SCOPED_TRACE(iter);
    expect_consistent(p, scope);
    // Byte by byte: an entry is Zero exactly where the zero extents say so.
    std::vector<int> zero_model(disk, 0);
    for (const Range& z : zeros)
      for (uint64_t b = z.start; b < z.end(); ++b) zero_model[b] = 1;
    for (const PlanEntry& e : p.entries) {
      for (uint64_t b = e.start; b < e.end(); ++b) {
        ASSERT_EQ(zero_model[b] == 1, e.kind == K::Zero) << "byte " << b;
      }
    }
  }
}

// ---------------------------------------------------------------- digest

TEST(UnitPlan, DigestIsStableForEqualPlans) {
  RangeList zeros{{MiB, MiB}};
  Plan a = make_plan(8 * MiB, {{0, 8 * MiB}}, zeros, true);
  Plan b = make_plan(8 * MiB, {{0, 8 * MiB}}, zeros, true);
  EXPECT_EQ(a.digest(), b.digest());
  EXPECT_EQ(a.digest(), a.digest());
  EXPECT_EQ(a.digest().size(), 16u);
  EXPECT_EQ(a.digest().find_first_not_of("0123456789abcdef"), std::string::npos) << a.digest();
  // Equal plans built by hand and by make_plan agree.
  Plan c;
  c.disk_size = 8 * MiB;
  c.entries = {{0, MiB, K::Data}, {MiB, MiB, K::Zero}, {2 * MiB, 6 * MiB, K::Data}};
  EXPECT_EQ(c.digest(), a.digest());
}

TEST(UnitPlan, DigestDiffersForDifferentPlans) {
  Plan base = make_plan(8 * MiB, {{0, 8 * MiB}}, {{MiB, MiB}}, true);
  std::vector<Plan> variants{
      make_plan(16 * MiB, {{0, 8 * MiB}}, {{MiB, MiB}}, true),      // disk size
      make_plan(8 * MiB, {{0, 4 * MiB}}, {{MiB, MiB}}, true),       // scope
      make_plan(8 * MiB, {{0, 8 * MiB}}, {{MiB, 2 * MiB}}, true),   // zero length
      make_plan(8 * MiB, {{0, 8 * MiB}}, {{2 * MiB, MiB}}, true),   // zero position
      make_plan(8 * MiB, {{0, 8 * MiB}}, {}, true),                 // no zeros
      make_plan(8 * MiB, {}, {}, true),                             // nothing
  };
  // Same ranges, one kind flipped.
  Plan flipped = base;
  flipped.entries[1].kind = K::Data;
  variants.push_back(flipped);

  std::set<std::string> seen{base.digest()};
  for (size_t i = 0; i < variants.size(); ++i) {
    EXPECT_NE(variants[i].digest(), base.digest()) << "variant " << i;
    seen.insert(variants[i].digest());
  }
  EXPECT_EQ(seen.size(), variants.size() + 1) << "two different variants share a digest";
}

// ---------------------------------------------------------------- plan_totals

TEST(UnitPlan, TotalsOnReusedTargetIncludeZeroes) {
  Plan p = make_plan(8 * MiB, {{0, 8 * MiB}}, {{MiB, 3 * MiB}}, true);
  PlanTotals t = plan_totals(p, /*target_is_zero=*/false);
  EXPECT_EQ(t.total, 8 * MiB);  // 5 MiB data + 3 MiB write-zeroes
  EXPECT_EQ(t.skipped, 0u);
}

TEST(UnitPlan, TotalsOnFreshTargetSkipZeroes) {
  Plan p = make_plan(8 * MiB, {{0, 8 * MiB}}, {{MiB, 3 * MiB}}, true);
  PlanTotals t = plan_totals(p, /*target_is_zero=*/true);
  EXPECT_EQ(t.total, 5 * MiB);
  EXPECT_EQ(t.skipped, 3 * MiB);
  EXPECT_EQ(t.total + t.skipped, p.scope_bytes);
}

TEST(UnitPlan, TotalsRestrictedScope) {
  Plan p = make_plan(16 * MiB, {{MiB, 2 * MiB}, {9 * MiB, 4 * MiB}}, {{2 * MiB, 4 * MiB}, {10 * MiB, 2 * MiB}}, true);
  // data: [1M,2M) [9M,10M) [12M,13M) = 3 MiB; zero: [2M,3M) [10M,12M) = 3 MiB
  PlanTotals reused = plan_totals(p, false);
  EXPECT_EQ(reused.total, 6 * MiB);
  EXPECT_EQ(reused.skipped, 0u);
  PlanTotals fresh = plan_totals(p, true);
  EXPECT_EQ(fresh.total, 3 * MiB);
  EXPECT_EQ(fresh.skipped, 3 * MiB);
}

TEST(UnitPlan, TotalsEmptyAndAllData) {
  Plan empty = make_plan(8 * MiB, {}, {}, true);
  EXPECT_EQ(plan_totals(empty, true).total, 0u);
  EXPECT_EQ(plan_totals(empty, true).skipped, 0u);
  EXPECT_EQ(plan_totals(empty, false).total, 0u);
  Plan dense = make_plan(8 * MiB, {{0, 8 * MiB}}, {}, false);
  EXPECT_EQ(plan_totals(dense, true).total, 8 * MiB);
  EXPECT_EQ(plan_totals(dense, true).skipped, 0u);
  EXPECT_EQ(plan_totals(dense, false).total, 8 * MiB);
}

}  // namespace
}  // namespace mk::engine
