#include "source/change_ids.h"

#include <fmt/format.h>

#include "common/error.h"

namespace mk::source {

std::string change_id_uuid(const std::string& change_id) {
  auto slash = change_id.rfind('/');
  return slash == std::string::npos ? "" : change_id.substr(0, slash);
}

ChangeIdDecision decide_change_id(const std::optional<std::string>& stored, const std::string& snapshot_change_id,
                                  const std::string& disk_label) {
  if (snapshot_change_id.empty()) {
    throw Error(fmt::format("disk {}: Changed Block Tracking is not active in the snapshot (no changeId); enable "
                            "CBT on the VM and take a snapshot to activate it",
                            disk_label));
  }
  if (!stored || stored->empty()) {
    return {"*", true, fmt::format("disk {}: first pass: copying the allocated areas", disk_label)};
  }
  std::string was = change_id_uuid(*stored), now = change_id_uuid(snapshot_change_id);
  if (was.empty() || was != now) {
    return {"*", true,
            fmt::format("disk {}: full pass: Changed Block Tracking was reset (stored change ID \"{}\" belongs to "
                        "tracking UUID \"{}\", the disk now has \"{}\")",
                        disk_label, *stored, was, now)};
  }
  return {*stored, false, fmt::format("disk {}: incremental pass since change ID \"{}\"", disk_label, *stored)};
}

}  // namespace mk::source
