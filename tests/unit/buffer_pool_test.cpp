// Unit tests for src/engine/buffer_pool.h: a fixed set of page-aligned buffers.
#include "engine/buffer_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

namespace mk::engine {
namespace {

bool page_aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4096 == 0; }

std::vector<void*> take_all(BufferPool& pool) {
  std::vector<void*> out;
  while (void* b = pool.take()) {
    out.push_back(b);
    if (out.size() > 10000) break;  // a pool that never runs dry fails below
  }
  return out;
}

TEST(UnitBufferPool, TakeUntilEmptyThenNullptr) {
  BufferPool pool(4, 4096);
  EXPECT_EQ(pool.buffer_size(), 4096u);
  EXPECT_EQ(pool.available(), 4u);
  auto bufs = take_all(pool);
  EXPECT_EQ(bufs.size(), 4u);
  EXPECT_EQ(pool.available(), 0u);
  EXPECT_EQ(pool.take(), nullptr);
  EXPECT_EQ(pool.take(), nullptr);
  for (void* b : bufs) pool.give_back(b);
}

TEST(UnitBufferPool, GiveBackMakesBufferAvailableAgain) {
  BufferPool pool(2, 8192);
  void* a = pool.take();
  void* b = pool.take();
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(pool.take(), nullptr);
  pool.give_back(a);
  EXPECT_EQ(pool.available(), 1u);
  EXPECT_EQ(pool.take(), a);  // the one given back, nothing new
  EXPECT_EQ(pool.take(), nullptr);
  pool.give_back(b);
  pool.give_back(a);
  EXPECT_EQ(pool.available(), 2u);
  std::set<void*> again{pool.take(), pool.take()};
  EXPECT_EQ(again, (std::set<void*>{a, b}));
}

TEST(UnitBufferPool, BuffersAreDistinctAndDoNotOverlap) {
  const size_t size = 64 * 1024;
  BufferPool pool(16, size);
  auto bufs = take_all(pool);
  ASSERT_EQ(bufs.size(), 16u);
  std::vector<char*> sorted;
  for (void* b : bufs) sorted.push_back(static_cast<char*>(b));
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    EXPECT_GE(sorted[i] - sorted[i - 1], static_cast<ptrdiff_t>(size)) << "buffers " << i - 1 << " and " << i;
  }
  // Every byte of every buffer is writable and keeps its own content.
  for (size_t i = 0; i < bufs.size(); ++i) std::memset(bufs[i], static_cast<int>(i + 1), size);
  for (size_t i = 0; i < bufs.size(); ++i) {
    auto* p = static_cast<unsigned char*>(bufs[i]);
    EXPECT_EQ(p[0], i + 1);
    EXPECT_EQ(p[size - 1], i + 1);
    EXPECT_EQ(std::count(p, p + size, static_cast<unsigned char>(i + 1)), static_cast<ptrdiff_t>(size));
  }
  for (void* b : bufs) pool.give_back(b);
}

TEST(UnitBufferPool, FreshBuffersReadAsZero) {
  BufferPool pool(3, 4096);
  for (void* b : take_all(pool)) {
    auto* p = static_cast<unsigned char*>(b);
    EXPECT_EQ(std::count(p, p + 4096, 0), 4096);
    pool.give_back(b);
  }
}

TEST(UnitBufferPool, AlignedToPageForPageMultiples) {
  for (size_t size : {size_t{4096}, size_t{8192}, size_t{65536}, size_t{4} << 20}) {
    BufferPool pool(5, size);
    auto bufs = take_all(pool);
    ASSERT_EQ(bufs.size(), 5u);
    for (void* b : bufs) EXPECT_TRUE(page_aligned(b)) << b << " size " << size;
    for (void* b : bufs) pool.give_back(b);
  }
}

TEST(UnitBufferPool, AlignedToPageForAnySize) {
  for (size_t size : {size_t{5120}, size_t{4096 + 512}, size_t{1000}}) {
    BufferPool pool(4, size);
    auto bufs = take_all(pool);
    ASSERT_EQ(bufs.size(), 4u);
    for (void* b : bufs) EXPECT_TRUE(page_aligned(b)) << b << " size " << size;
    for (void* b : bufs) pool.give_back(b);
  }
}

TEST(UnitBufferPool, EmptyPools) {
  BufferPool none(0, 4096);
  EXPECT_EQ(none.available(), 0u);
  EXPECT_EQ(none.take(), nullptr);
  BufferPool zero_size(4, 0);
  EXPECT_EQ(zero_size.available(), 0u);
  EXPECT_EQ(zero_size.take(), nullptr);
}

}  // namespace
}  // namespace mk::engine
