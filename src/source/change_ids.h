// The change-ID rules of incremental passes over VMware Changed Block Tracking.
//
// A change ID looks like "52 3c 1f ... 2a/17": the disk's change-tracking UUID, a slash,
// and a sequence number. Per VM and per disk key:
//   * no stored change ID: a full pass that asks for "*" (the allocated areas);
//   * the stored ID's UUID differs from the snapshot disk's: CBT was reset since, so the
//     stored ID means nothing; a full pass, with the reason;
//   * otherwise an incremental pass from the stored ID (if vSphere then rejects it, the
//     caller falls back to a full pass, with the reason);
//   * after a successful pass the snapshot disk's change ID is what to store.
// Pure functions.
#pragma once

#include <optional>
#include <string>

namespace mk::source {

struct ChangeIdDecision {
  std::string query;   // the changeId to pass to QueryChangedDiskAreas ("*" or stored)
  bool full = false;
  std::string reason;  // human-readable, names the disk
};

// "52 3c ... 2a/17" -> "52 3c ... 2a"; "" when the ID has no '/'.
std::string change_id_uuid(const std::string& change_id);

// `snapshot_change_id` must be non-empty (CBT active on the disk); throws mk::Error if not.
ChangeIdDecision decide_change_id(const std::optional<std::string>& stored, const std::string& snapshot_change_id,
                                  const std::string& disk_label);

}  // namespace mk::source
