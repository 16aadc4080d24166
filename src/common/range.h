// Byte ranges of a disk and the set operations the planner needs.
//
// A RangeList is normalised when it is sorted by start, has no empty ranges and no two
// ranges overlap or touch. Every function returning a RangeList returns it normalised.
#pragma once

#include <cstdint>
#include <vector>

namespace mk {

struct Range {
  uint64_t start = 0;
  uint64_t length = 0;
  uint64_t end() const { return start + length; }
  bool operator==(const Range&) const = default;
};

using RangeList = std::vector<Range>;

// Sorts and merges overlapping or adjacent ranges; drops empty ones.
RangeList normalize(RangeList ranges);

// Bytes in both a and b. Inputs must be normalised.
RangeList intersect(const RangeList& a, const RangeList& b);

// Bytes in a but not in b. Inputs must be normalised.
RangeList subtract(const RangeList& a, const RangeList& b);

uint64_t total_length(const RangeList& ranges);

}  // namespace mk
