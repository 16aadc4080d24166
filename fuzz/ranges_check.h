// The invariant of a parsed range list (fuzz targets): sorted, non-overlapping,
// non-adjacent, no empty range, every range inside a disk of `disk_size` bytes.
#pragma once

#include <fmt/format.h>

#include "common/range.h"
#include "fuzz_support.h"

namespace mk::fuzz {

inline void check_ranges(const RangeList& ranges, uint64_t disk_size, const char* what) {
  uint64_t previous_end = 0;
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Range& r = ranges[i];
    if (r.length == 0) fail(fmt::format("{}: range {} is empty", what, i));
    if (r.start >= disk_size || r.length > disk_size - r.start) {
      fail(fmt::format("{}: range {} [{}, +{}) is past the disk's {} bytes", what, i, r.start, r.length, disk_size));
    }
    if (i > 0 && r.start <= previous_end) fail(fmt::format("{}: range {} is not after range {}", what, i, i - 1));
    previous_end = r.end();
  }
}

// Disk sizes the targets pick from with their selector byte: the edges and typical sizes.
inline uint64_t disk_size_for(uint8_t selector) {
  static const uint64_t sizes[] = {0, 1, 512, 4096, 1ull << 20, 1ull << 30, 1ull << 40, ~0ull};
  return sizes[selector % (sizeof sizes / sizeof sizes[0])];
}

}  // namespace mk::fuzz
