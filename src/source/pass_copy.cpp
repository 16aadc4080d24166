#include "source/pass_copy.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/units.h"
#include "engine/plan.h"

namespace mk::source {

engine::CopyStats copy_disk(const DiskPass& disk, const Endpoint& target, const engine::CopyOptions& options,
                            CopyTimes* times) {
  auto started = std::chrono::steady_clock::now();
  Endpoint source{disk.uri, {}, "source"};
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
  if (options.progress) {
    engine::PlanTotals totals = engine::plan_totals(plan, options.target_is_zero);
    options.progress->set_total(totals.total, totals.skipped);
    options.progress->set_phase("copying");
  }
  double planning = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  engine::CopyStats stats = engine::copy_plan(source, target, plan, {}, options);
  if (times) *times = {planning, std::max(0.0, stats.seconds - stats.flush_seconds), stats.flush_seconds};
  return stats;
}

std::vector<std::string> copy_arguments(const DiskPass& disk, const std::string& file) {
  if (!disk.request.dirty_bitmap.empty()) return {"--dirty-bitmap", disk.request.dirty_bitmap};
  if (!disk.request.changed_areas) return {};
  nlohmann::json areas = nlohmann::json::array();
  for (auto& r : *disk.request.changed_areas) areas.push_back({{"start", r.start}, {"length", r.length}});
  try {
    write_private_file(file, areas.dump());
  } catch (const Error& e) {
    throw Error(fmt::format("disk {}: cannot write the changed areas: {}", disk.label, e.what()));
  }
  return {"--changed-areas", file};
}

}  // namespace mk::source
