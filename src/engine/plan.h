// The plan of one copy pass: which byte ranges of the source must be read (data) and
// which are known to be zero, within the pass's scope.
//
// The scope is the whole disk for a full pass, or the changed areas of an incremental
// pass (a changed-areas file or the source's qemu:dirty-bitmap meta context). Within
// the scope, the source's base:allocation block status marks zero extents (holes and
// allocated zeros): those are never read. A source without block status is all data.
// A Plan is a plain value; build_plan() uses the given connection synchronously.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/range.h"
#include "engine/nbd_connection.h"

namespace mk::engine {

enum class ExtentKind : uint8_t { Data, Zero };

struct PlanEntry {
  uint64_t start = 0;
  uint64_t length = 0;
  ExtentKind kind = ExtentKind::Data;
  uint64_t end() const { return start + length; }
  bool operator==(const PlanEntry&) const = default;
};

struct Plan {
  uint64_t disk_size = 0;
  std::vector<PlanEntry> entries;  // sorted, non-overlapping
  uint64_t scope_bytes = 0;        // bytes the pass covers (disk or changed areas)
  uint64_t data_bytes = 0;         // bytes to read from the source
  uint64_t zero_bytes = 0;         // bytes in scope known to read as zero
  bool block_status = false;       // whether the source reported base:allocation

  // A stable fingerprint of the plan (disk size and every entry), used to refuse
  // resuming a checkpoint that belongs to a different pass.
  std::string digest() const;
};

struct PlanRequest {
  std::optional<RangeList> changed_areas;  // normalised, within the disk
  std::string dirty_bitmap;                // bitmap name, empty for none
};

// Meta contexts to request when opening the source for planning.
std::vector<std::string> plan_meta_contexts(const PlanRequest& request);

// Builds the plan from the source's block status. Throws UsageError when a requested
// dirty bitmap is not exported, mk::Error on NBD failures.
Plan build_plan(NbdConnection& source, const PlanRequest& request);

// Combines a scope with the zero extents of the disk (pure logic, tested directly).
Plan make_plan(uint64_t disk_size, const RangeList& scope, const RangeList& zero_extents,
               bool block_status);

}  // namespace mk::engine
