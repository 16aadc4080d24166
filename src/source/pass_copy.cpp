#include "source/pass_copy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"
#include "common/units.h"
#include "engine/endpoint_lost.h"
#include "engine/plan.h"

namespace mk::source {
namespace {

// Opens the disk's checkpoint for `plan`. One that belongs to another plan or target
// (the pass was planned anew: a new snapshot, other changed areas) or is damaged
// cannot say what this copy has done: it is removed and the disk starts over, which
// may copy more than needed but never skips a range.
std::unique_ptr<engine::Checkpoint> open_checkpoint(DiskCheckpoint& spec, const engine::Plan& plan,
                                                    const Endpoint& target, const std::string& label) {
  nlohmann::json identity = spec.identity;
  identity["migratekit_checkpoint"] = 1;
  identity["plan"] = plan.digest();
  identity["disk_size"] = plan.disk_size;
  identity["target"] = target.uri;
  try {
    return engine::Checkpoint::open(spec.path, identity, plan.disk_size);
  } catch (const UsageError& e) {
    spec.discarded = e.what();
    log::warn("disk {}: {}; copying the disk from the start", label, spec.discarded);
    if (std::remove(spec.path.c_str()) != 0 && errno != ENOENT) throw;
    return engine::Checkpoint::open(spec.path, identity, plan.disk_size);
  }
}

// A server the copy cannot connect to is lost (engine::EndpointLost), so that the
// caller can tell it from one that answered with an error.
template <typename Open>
std::unique_ptr<engine::NbdConnection> open_or_lost(engine::Side side, Open open) {
  try {
    return open();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw engine::EndpointLost(side, e.what());
  }
}

}  // namespace

engine::CopyStats copy_disk(const DiskPass& disk, const Endpoint& target, const engine::CopyOptions& options,
                            DiskCheckpoint* checkpoint, CopyTimes* times) {
  auto started = std::chrono::steady_clock::now();
  Endpoint source{disk.uri, {}, "source"};
  // The connections opened to plan and check are handed to the copy: negotiating them
  // again (TLS to the target) would cost every disk of every pass a round of handshakes.
  engine::OpenConnections open;
  open.source = open_or_lost(engine::Side::Source, [&] {
    return engine::NbdConnection::open(source, engine::plan_meta_contexts(disk.request));
  });
  if (open.source->size() != disk.capacity) {
    throw Error(fmt::format("disk {}: the reader serves {} bytes but the disk has {}; refusing to copy", disk.label,
                            open.source->size(), disk.capacity));
  }
  engine::Plan plan = engine::build_plan(*open.source, disk.request);
  open.target = open_or_lost(engine::Side::Target, [&] { return engine::NbdConnection::open(target); });
  if (open.target->size() < plan.disk_size) {
    throw UsageError(fmt::format("{}: target is smaller ({} bytes) than disk {} ({} bytes)", target.describe(),
                                 open.target->size(), disk.label, plan.disk_size));
  }
  log::info("disk {}: {} to read, {} known zero, in a scope of {}", disk.label, format_bytes(plan.data_bytes),
            format_bytes(plan.zero_bytes), format_bytes(plan.scope_bytes));
  std::unique_ptr<engine::Checkpoint> cp;
  engine::CopyOptions o = options;
  RangeList done;
  if (checkpoint) {
    cp = open_checkpoint(*checkpoint, plan, target, disk.label);
    o.checkpoint = cp.get();
    done = cp->completed();
    if (!done.empty()) {
      log::info("disk {}: resuming from checkpoint {}: {} already copied and flushed", disk.label, cp->path(),
                format_bytes(total_length(done)));
    }
  }
  if (o.progress) {
    engine::PlanTotals totals = engine::plan_totals(plan, o.target_is_zero);
    o.progress->set_total(totals.total, totals.skipped);
    o.progress->set_phase("copying");
  }
  double planning = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  engine::CopyStats stats = engine::copy_plan(source, target, plan, done, o, std::move(open));
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
