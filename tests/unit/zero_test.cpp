// Unit tests for src/engine/zero.h is_zero: every byte counts, whatever the length.
#include "engine/zero.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace mk::engine {
namespace {

const std::vector<size_t> kLengths{0, 1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 4095, 4096, 4097,
                                   (1 << 20) + 3};

TEST(UnitZero, AllZerosOfManyLengths) {
  for (size_t len : kLengths) {
    std::vector<unsigned char> buf(len + 1, 0);
    EXPECT_TRUE(is_zero(buf.data(), len)) << "length " << len;
  }
}

TEST(UnitZero, ZeroLengthIsZeroWhateverTheBytes) {
  unsigned char b = 0xff;
  EXPECT_TRUE(is_zero(&b, 0));
}

TEST(UnitZero, UnalignedStart) {
  // The same zero region seen from every offset within a 64-byte window.
  std::vector<unsigned char> buf(8192 + 64, 0);
  for (size_t off = 0; off < 64; ++off) {
    EXPECT_TRUE(is_zero(buf.data() + off, 8192)) << "offset " << off;
  }
  // Byte 8223 is the last byte seen from offset 32 and past the end for offsets < 32.
  buf[8192 + 31] = 1;
  for (size_t off = 0; off < 64; ++off) {
    EXPECT_EQ(is_zero(buf.data() + off, 8192), off < 32) << "offset " << off;
  }
}

TEST(UnitZero, OneNonZeroByteAtEveryPositionOfSmallBuffers) {
  for (size_t len : {1, 2, 15, 16, 17, 31, 32, 33, 100, 257}) {
    std::vector<unsigned char> buf(len, 0);
    for (size_t pos = 0; pos < len; ++pos) {
      for (unsigned char v : {0x01, 0x80, 0xff}) {
        buf[pos] = v;
        EXPECT_FALSE(is_zero(buf.data(), len)) << "length " << len << " byte " << pos << " = " << int(v);
        buf[pos] = 0;
      }
    }
    EXPECT_TRUE(is_zero(buf.data(), len)) << "length " << len;
  }
}

TEST(UnitZero, NonZeroFirstOrLastByteOfLargeBuffers) {
  for (size_t len : {size_t{4096}, size_t{4097}, size_t{1 << 20}, size_t{(1 << 20) + 3},
                     size_t{4 << 20}}) {
    std::vector<unsigned char> buf(len, 0);
    buf[0] = 1;
    EXPECT_FALSE(is_zero(buf.data(), len)) << "first byte, length " << len;
    buf[0] = 0;
    buf[len - 1] = 1;
    EXPECT_FALSE(is_zero(buf.data(), len)) << "last byte, length " << len;
    buf[len - 1] = 0;
    buf[len / 2] = 0x40;
    EXPECT_FALSE(is_zero(buf.data(), len)) << "middle byte, length " << len;
    buf[len / 2] = 0;
    EXPECT_TRUE(is_zero(buf.data(), len)) << "length " << len;
  }
}

TEST(UnitZero, NonZeroAroundTheSixteenByteHead) {
  // The head is checked by hand and the rest by a shifted comparison: probe the seam.
  const size_t len = 4096;
  std::vector<unsigned char> buf(len, 0);
  for (size_t pos : {14, 15, 16, 17, 31, 32, 33, 4079, 4080, 4081}) {
    buf[pos] = 7;
    EXPECT_FALSE(is_zero(buf.data(), len)) << "byte " << pos;
    buf[pos] = 0;
  }
}

TEST(UnitZero, PeriodicNonZeroPatternIsNotZero) {
  // A buffer equal to itself shifted by 16 but not zero (same byte every 16).
  std::vector<unsigned char> buf(4096, 0);
  for (size_t i = 0; i < buf.size(); i += 16) buf[i] = 0xaa;
  EXPECT_FALSE(is_zero(buf.data(), buf.size()));
  std::vector<unsigned char> all_ones(4096, 0xff);
  EXPECT_FALSE(is_zero(all_ones.data(), all_ones.size()));
}

}  // namespace
}  // namespace mk::engine
