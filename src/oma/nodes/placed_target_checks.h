// PlacedTargetChecks: the JobManager's TargetChecks (jobs/target_checks.h) on an OMA
// node of several: before a pass attaches volumes, the VM is placed on a node
// (PlacementRepository), and only the node that holds it runs its passes.
//
//   * check(): a VM placed on another node, or this node without its lease, refuses
//     the pass (a blocking finding saying where to run it); otherwise the wrapped
//     target's findings (CloudStack's; none with local volumes). Reads only.
//   * volume_slots(): places the VM (or keeps its place). Placed here: the wrapped
//     target's slots (CloudStack's count of volumes attached to this node's VM), or
//     nothing to wait for. Waiting in the queue: the slots it needs and why no node can
//     take it, so the pass waits, still preparing, with that in its phase and goes on
//     once a node has room (JobManager polls).
//
// Does not own its collaborators. Thread-safe (they are).
#pragma once

#include "oma/db/placement_repository.h"
#include "oma/jobs/target_checks.h"
#include "oma/nodes/node_lease.h"

namespace mk::oma {

class PlacedTargetChecks : public TargetChecks {
 public:
  // `inner`: the target's own checks, or null (local volumes).
  PlacedTargetChecks(PlacementRepository& placements, const NodeLease& lease, TargetChecks* inner)
      : placements_(placements), lease_(lease), inner_(inner) {}

  TargetReport check(const std::string& vm_id) override;
  VolumeSlots volume_slots(const std::string& vm_id) override;

 private:
  PlacementRepository& placements_;
  const NodeLease& lease_;
  TargetChecks* inner_;
};

}  // namespace mk::oma
