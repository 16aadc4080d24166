#include "engine/plan.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <algorithm>

#include "common/error.h"

namespace mk::engine {
namespace {

constexpr const char* kAllocation = "base:allocation";
constexpr uint32_t kStateZero = 2;          // NBD_STATE_ZERO in base:allocation
constexpr uint32_t kStateDirty = 1;         // set bit in qemu:dirty-bitmap:*
// Block status request length: as long as the protocol allows (32 bits). Servers that
// find extents with SEEK_HOLE scan to the end of a data run whatever the length asked,
// so fewer, longer requests cost less.
constexpr uint64_t kQueryStep = 0xFFFFF000;
constexpr uint64_t kWindowGap = 256ull << 20;  // changed areas closer than this share a query

std::string bitmap_context(const std::string& name) { return "qemu:dirty-bitmap:" + name; }

struct StatusCollector {
  std::string dirty_context;
  RangeList zero;          // extents with NBD_STATE_ZERO
  RangeList dirty;         // extents with the dirty bit
  uint64_t alloc_end = 0;  // how far base:allocation answered
  uint64_t dirty_end = 0;  // how far the bitmap answered
};

int collect(void* user, const char* context, uint64_t offset, uint32_t* entries,
            size_t nr_entries, int* error) {
  auto* c = static_cast<StatusCollector*>(user);
  bool is_alloc = std::string_view(context) == kAllocation;
  bool is_dirty = !c->dirty_context.empty() && c->dirty_context == context;
  if (!is_alloc && !is_dirty) return 0;
  uint64_t pos = offset;
  for (size_t i = 0; i + 1 < nr_entries; i += 2) {
    uint64_t len = entries[i];
    uint32_t flags = entries[i + 1];
    if (is_alloc && (flags & kStateZero)) c->zero.push_back({pos, len});
    if (is_dirty && (flags & kStateDirty)) c->dirty.push_back({pos, len});
    pos += len;
  }
  (is_alloc ? c->alloc_end : c->dirty_end) = pos;
  return 0;
}

// Changed areas merged into a few windows, so that scattered small areas cost a few
// block-status round trips instead of one each.
RangeList query_windows(const RangeList& areas) {
  RangeList windows;
  for (const Range& r : areas) {
    if (!windows.empty() && r.start - windows.back().end() <= kWindowGap) {
      windows.back().length = r.end() - windows.back().start;
    } else {
      windows.push_back(r);
    }
  }
  return windows;
}

}  // namespace

std::string Plan::digest() const {
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, &disk_size, sizeof disk_size);
  for (const PlanEntry& e : entries) {
    uint64_t rec[3] = {e.start, e.length, static_cast<uint64_t>(e.kind)};
    XXH3_64bits_update(st, rec, sizeof rec);
  }
  uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return fmt::format("{:016x}", h);
}

std::vector<std::string> plan_meta_contexts(const PlanRequest& request) {
  std::vector<std::string> contexts{kAllocation};
  if (!request.dirty_bitmap.empty()) contexts.push_back(bitmap_context(request.dirty_bitmap));
  return contexts;
}

Plan make_plan(uint64_t disk_size, const RangeList& scope, const RangeList& zero_extents,
               bool block_status) {
  Plan plan;
  plan.disk_size = disk_size;
  plan.block_status = block_status;
  RangeList zeros = intersect(scope, zero_extents);
  RangeList data = subtract(scope, zeros);
  for (const Range& r : data) plan.entries.push_back({r.start, r.length, ExtentKind::Data});
  for (const Range& r : zeros) plan.entries.push_back({r.start, r.length, ExtentKind::Zero});
  std::sort(plan.entries.begin(), plan.entries.end(),
            [](const PlanEntry& a, const PlanEntry& b) { return a.start < b.start; });
  plan.scope_bytes = total_length(scope);
  plan.data_bytes = total_length(data);
  plan.zero_bytes = total_length(zeros);
  return plan;
}

Plan build_plan(NbdConnection& source, const PlanRequest& request) {
  const uint64_t size = source.size();
  nbd_handle* h = source.handle();
  StatusCollector c;
  bool want_bitmap = !request.dirty_bitmap.empty();
  if (want_bitmap) {
    c.dirty_context = bitmap_context(request.dirty_bitmap);
    if (!source.can_meta_context(c.dirty_context)) {
      throw UsageError(fmt::format(
          "{}: dirty bitmap '{}' is not exported (serve the image with qemu-nbd -B {})",
          source.endpoint().describe(), request.dirty_bitmap, request.dirty_bitmap));
    }
  }
  bool have_alloc = source.can_meta_context(kAllocation);

  RangeList windows;
  if (request.changed_areas) {
    windows = query_windows(*request.changed_areas);
  } else if (size > 0) {
    windows = {{0, size}};
  }

  if (have_alloc || want_bitmap) {
    for (const Range& w : windows) {
      uint64_t pos = w.start;
      while (pos < w.end()) {
        uint64_t count = std::min(w.end() - pos, kQueryStep);
        c.alloc_end = c.dirty_end = pos;
        nbd_extent_callback cb{.callback = collect, .user_data = &c, .free = nullptr};
        if (nbd_block_status(h, count, pos, cb, 0) == -1) {
          source.fail(fmt::format("block status at offset {}", pos));
        }
        uint64_t next = std::min(have_alloc ? c.alloc_end : UINT64_MAX,
                                 want_bitmap ? c.dirty_end : UINT64_MAX);
        if (next <= pos) {
          throw Error(fmt::format("{}: block status at offset {} made no progress",
                                  source.endpoint().describe(), pos));
        }
        pos = next;
      }
    }
  }

  RangeList scope;
  if (request.changed_areas) {
    scope = *request.changed_areas;
  } else if (want_bitmap) {
    scope = intersect(normalize(c.dirty), {{0, size}});
  } else if (size > 0) {
    scope = {{0, size}};
  }
  // Extents past a window's end were clipped by the loop's step only at its end; clip
  // everything to the disk and let intersect() drop what lies outside the scope.
  RangeList zero = have_alloc ? intersect(normalize(c.zero), {{0, size}}) : RangeList{};
  return make_plan(size, scope, zero, have_alloc);
}

}  // namespace mk::engine
