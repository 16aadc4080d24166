#include "source/pass_copy.h"

#include <fmt/format.h>

#include "common/error.h"
#include "common/log.h"
#include "common/units.h"
#include "engine/plan.h"

namespace mk::source {

engine::CopyStats copy_disk(const DiskPass& disk, const engine::Endpoint& target, const engine::CopyOptions& options) {
  engine::Endpoint source{disk.uri, {}, "source"};
  engine::Plan plan;
  {
    auto src = engine::NbdConnection::open(source, engine::plan_meta_contexts(disk.request));
    if (src->size() != disk.capacity) {
      throw Error(fmt::format("disk {}: the reader serves {} bytes but the disk has {}; refusing to copy",
                              disk.label, src->size(), disk.capacity));
    }
    plan = engine::build_plan(*src, disk.request);
  }
  {
    auto dst = engine::NbdConnection::open(target);
    if (dst->size() < plan.disk_size) {
      throw UsageError(fmt::format("{}: target is smaller ({} bytes) than disk {} ({} bytes)", target.describe(),
                                   dst->size(), disk.label, plan.disk_size));
    }
  }
  log::info("disk {}: {} to read, {} known zero, in a scope of {}", disk.label, format_bytes(plan.data_bytes),
            format_bytes(plan.zero_bytes), format_bytes(plan.scope_bytes));
  return engine::copy_plan(source, target, plan, {}, options);
}

}  // namespace mk::source
