// Placement: which OMA node takes a VM's volumes, as a pure function of a snapshot of
// the nodes (PlacementRepository reads the snapshot and applies the decision in one
// transaction).
//
// All of a VM's volumes go to one node. A node can take a VM when its lease is alive,
// the operator has not drained it, and it has the free data-volume slots (one per
// disk) and, if its space is limited, the free bytes. Of those, the least loaded takes
// it: the lowest share of its slots in use, then the most free slots, then the node id
// (so equal snapshots give equal answers). When none can, the decision names the limit
// that keeps the VM waiting and says it in words: how many slots it needs and the most
// any node has free.
//
// Values and free functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/node_repository.h"

namespace mk::oma {

// A node as placement sees it: its lease, the operator's state, capacity and use.
struct NodeCapacity {
  std::string node_id;
  bool alive = false;
  NodeState state = NodeState::Active;
  int64_t volume_slots = 0, slots_used = 0;
  int64_t disk_bytes = 0, bytes_used = 0;  // disk_bytes 0: not limited by space
  int64_t vms = 0;                          // VMs placed on it

  int64_t free_slots() const { return volume_slots - slots_used; }
};

// What a VM needs: one data-volume slot per disk, and its disks' bytes.
struct PlacementNeed {
  int64_t slots = 0;
  int64_t bytes = 0;
};

// Why a VM waits: no node may take VMs at all (none alive and active), none has the
// free slots, or those with the slots lack the space.
enum class PlacementLimit { None, NoActiveNode, VolumeSlots, DiskSpace };
const EnumTable<PlacementLimit>& enum_table(PlacementLimit);

struct PlacementDecision {
  std::optional<std::string> node_id;  // the chosen node; nullopt: the VM waits
  PlacementLimit limit = PlacementLimit::None;
  std::string reason;  // why it waits, in words; empty when placed
};

// Chooses the node for a VM needing `need`. With `only`, that node or none (an
// operator's move): the reason then says why that node cannot take it.
PlacementDecision choose_node(const std::vector<NodeCapacity>& nodes, const PlacementNeed& need,
                              const std::optional<std::string>& only = std::nullopt);

}  // namespace mk::oma
