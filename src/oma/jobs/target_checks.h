// TargetChecks: what the target cloud says about a VM before the JobManager touches it,
// beside the VMA's preflight (which speaks for vCenter). The "cloudstack" volume backend
// has one (CloudStackChecks, oma/cutover/cloudstack_target.h: limits, offerings, the
// OMA's own VM); the "local" backend has none.
//
//   * check(): findings in the protocol's PreflightFinding form, so that the API and the
//     GUI show them like the VMA's. `blocking` refuse a pass (and so a cutover);
//     `cutover` refuse only a cutover or test failover (the VM CloudStack would build);
//     `notes` refuse nothing and are worth knowing.
//   * volume_slots(): every volume of a VM in replication is attached to the OMA's VM,
//     which holds a limited number of data volumes: how many the VM's pass would add
//     and how many are free now. A pass that does not fit waits for free slots.
//
// Implementations are thread-safe; their calls may be slow (they ask the cloud).
#pragma once

#include <string>
#include <vector>

#include "protocol/messages.h"

namespace mk::oma {

struct TargetReport {
  std::vector<protocol::PreflightFinding> blocking;
  std::vector<protocol::PreflightFinding> cutover;
  std::vector<protocol::PreflightFinding> notes;
};

struct VolumeSlots {
  int needed = 0;     // the VM's volumes not attached to the OMA now
  int free = 0;       // data volumes the OMA's VM may still take
  std::string limit;  // the limit in words: "KVM allows 32 data volumes per VM; 31 are attached to the OMA's VM"
};

class TargetChecks {
 public:
  virtual ~TargetChecks() = default;
  // Throws mk::Error when the target cannot be asked (not configured, unreachable).
  virtual TargetReport check(const std::string& vm_id) = 0;
  virtual VolumeSlots volume_slots(const std::string& vm_id) = 0;
};

}  // namespace mk::oma
