#include "oma/nodes/placed_target_checks.h"

#include <fmt/format.h>

namespace mk::oma {
namespace {

protocol::PreflightFinding blocking(const std::string& code, const std::string& problem, const std::string& remedy) {
  return {code, std::nullopt, problem, remedy, problem + ": " + remedy};
}

}  // namespace

TargetReport PlacedTargetChecks::check(const std::string& vm_id) {
  TargetReport report;
  if (!lease_.held()) {
    report.blocking.push_back(blocking(
        "node-lease-lost",
        fmt::format("this OMA node ({}) does not hold its lease now (the database did not renew it)", lease_.node_id()),
        "it touches no volumes until it holds it again: check its connection to the database"));
    return report;
  }
  auto p = placements_.find(vm_id);
  if (p && p->node_id && *p->node_id != lease_.node_id()) {
    report.blocking.push_back(blocking("placed-on-another-node",
                                       fmt::format("VM {}'s volumes are on OMA node {}", vm_id, *p->node_id),
                                       "run its passes there (GET /api/v1/nodes gives its API)"));
    return report;
  }
  return inner_ ? inner_->check(vm_id) : report;
}

VolumeSlots PlacedTargetChecks::volume_slots(const std::string& vm_id) {
  PlacementRecord p = placements_.place_vm(vm_id);
  if (!p.node_id) return {static_cast<int>(p.slots), 0, "no OMA node can take the VM: " + p.waiting_reason.value_or("")};
  if (*p.node_id != lease_.node_id())
    throw Error(fmt::format("VM {} was placed on OMA node {}, not on this node ({}): run its pass there", vm_id,
                            *p.node_id, lease_.node_id()));
  return inner_ ? inner_->volume_slots(vm_id) : VolumeSlots{};
}

}  // namespace mk::oma
