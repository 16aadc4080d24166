#include "oma/nodes/placement.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/units.h"

namespace mk::oma {

const EnumTable<PlacementLimit>& enum_table(PlacementLimit) {
  static const EnumTable<PlacementLimit> t{"placement limit", {{PlacementLimit::None, "none"},
      {PlacementLimit::NoActiveNode, "no_active_node"}, {PlacementLimit::VolumeSlots, "volume_slots"},
      {PlacementLimit::DiskSpace, "disk_space"}}};
  return t;
}

namespace {

bool has_space(const NodeCapacity& n, const PlacementNeed& need) {
  return n.disk_bytes == 0 || n.disk_bytes - n.bytes_used >= need.bytes;
}

// Lower is less loaded: the share of slots in use, then fewer free slots last, then the id.
bool less_loaded(const NodeCapacity& a, const NodeCapacity& b) {
  // a.used/a.total < b.used/b.total, without division (totals are positive).
  __int128 left = static_cast<__int128>(a.slots_used) * b.volume_slots;
  __int128 right = static_cast<__int128>(b.slots_used) * a.volume_slots;
  if (left != right) return left < right;
  if (a.free_slots() != b.free_slots()) return a.free_slots() > b.free_slots();
  return a.node_id < b.node_id;
}

std::string slots_needed(const PlacementNeed& need) {
  return fmt::format("needs {} data-volume slot{} ({})", need.slots, need.slots == 1 ? "" : "s",
                     format_bytes(static_cast<uint64_t>(need.bytes)));
}

PlacementDecision waiting(PlacementLimit limit, std::string reason) { return {std::nullopt, limit, std::move(reason)}; }

// Why the one node `n` cannot take the VM, or nullopt if it can.
std::optional<PlacementDecision> refusal(const NodeCapacity& n, const PlacementNeed& need) {
  if (!n.alive) return waiting(PlacementLimit::NoActiveNode, fmt::format("node {} is not running (its lease is not alive)", n.node_id));
  if (n.state != NodeState::Active)
    return waiting(PlacementLimit::NoActiveNode, fmt::format("node {} is {}", n.node_id, n.state));
  if (n.free_slots() < need.slots)
    return waiting(PlacementLimit::VolumeSlots, fmt::format("{}; node {} has {} of {} free", slots_needed(need),
                                                            n.node_id, std::max<int64_t>(0, n.free_slots()),
                                                            n.volume_slots));
  if (!has_space(n, need))
    return waiting(PlacementLimit::DiskSpace,
                   fmt::format("{}; node {} has {} of {} free", slots_needed(need), n.node_id,
                               format_bytes(static_cast<uint64_t>(std::max<int64_t>(0, n.disk_bytes - n.bytes_used))),
                               format_bytes(static_cast<uint64_t>(n.disk_bytes))));
  return std::nullopt;
}

}  // namespace

PlacementDecision choose_node(const std::vector<NodeCapacity>& nodes, const PlacementNeed& need,
                              const std::optional<std::string>& only) {
  if (only) {
    auto it = std::find_if(nodes.begin(), nodes.end(), [&](const NodeCapacity& n) { return n.node_id == *only; });
    if (it == nodes.end()) return waiting(PlacementLimit::NoActiveNode, fmt::format("no node {}", *only));
    if (auto no = refusal(*it, need)) return *no;
    return {*only, PlacementLimit::None, ""};
  }
  std::vector<const NodeCapacity*> open;
  for (const auto& n : nodes) {
    if (n.alive && n.state == NodeState::Active && n.volume_slots > 0) open.push_back(&n);
  }
  if (open.empty())
    return waiting(PlacementLimit::NoActiveNode,
                   fmt::format("{}; no node is running and active ({} known)", slots_needed(need), nodes.size()));
  const NodeCapacity* best = nullptr;
  const NodeCapacity* most_slots = nullptr;
  bool some_had_slots = false;
  for (const auto* n : open) {
    if (!most_slots || n->free_slots() > most_slots->free_slots()) most_slots = n;
    if (n->free_slots() < need.slots) continue;
    some_had_slots = true;
    if (!has_space(*n, need)) continue;
    if (!best || less_loaded(*n, *best)) best = n;
  }
  if (best) return {best->node_id, PlacementLimit::None, ""};
  if (!some_had_slots)
    return waiting(PlacementLimit::VolumeSlots,
                   fmt::format("{}; the most free on any active node is {} (node {})", slots_needed(need),
                               std::max<int64_t>(0, most_slots->free_slots()), most_slots->node_id));
  return waiting(PlacementLimit::DiskSpace,
                 fmt::format("{}; the active nodes with {} free slots lack the disk space", slots_needed(need),
                             need.slots));
}

}  // namespace mk::oma
