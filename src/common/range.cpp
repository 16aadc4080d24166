#include "common/range.h"

#include <algorithm>

namespace mk {

RangeList normalize(RangeList ranges) {
  std::erase_if(ranges, [](const Range& r) { return r.length == 0; });
  std::sort(ranges.begin(), ranges.end(),
            [](const Range& a, const Range& b) { return a.start < b.start; });
  RangeList out;
  for (const Range& r : ranges) {
    if (!out.empty() && r.start <= out.back().end()) {
      uint64_t end = std::max(out.back().end(), r.end());
      out.back().length = end - out.back().start;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

RangeList intersect(const RangeList& a, const RangeList& b) {
  RangeList out;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    uint64_t start = std::max(a[i].start, b[j].start);
    uint64_t end = std::min(a[i].end(), b[j].end());
    if (start < end) out.push_back({start, end - start});
    if (a[i].end() < b[j].end()) ++i; else ++j;
  }
  return out;
}

RangeList subtract(const RangeList& a, const RangeList& b) {
  RangeList out;
  size_t j = 0;
  for (const Range& r : a) {
    uint64_t pos = r.start;
    while (j < b.size() && b[j].end() <= pos) ++j;
    size_t k = j;
    while (pos < r.end()) {
      if (k >= b.size() || b[k].start >= r.end()) {
        out.push_back({pos, r.end() - pos});
        break;
      }
      if (b[k].start > pos) out.push_back({pos, b[k].start - pos});
      pos = std::max(pos, b[k].end());
      ++k;
    }
  }
  return out;
}

uint64_t total_length(const RangeList& ranges) {
  uint64_t n = 0;
  for (const Range& r : ranges) n += r.length;
  return n;
}

}  // namespace mk
