// Copying one disk of a pass with the copy engine: plan from the pass's request (changed
// areas or dirty bitmap) intersected with the source's block status, then copy. Or, for
// a VMA that runs `migratekit copy` per disk, the arguments that select the same areas.
// Blocking; safe to call from several threads for different disks.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/endpoint.h"
#include "engine/copier.h"
#include "source/source_driver.h"

namespace mk::source {

// The durable record of one disk's copy in one pass (engine::Checkpoint), so that a
// rerun of the same pass after an interruption copies only what was not flushed yet.
struct DiskCheckpoint {
  std::string path;         // the checkpoint file; its directory exists and is private
  nlohmann::json identity;  // the pass and the disk (job, snapshot, disk key); copy_disk
                            // adds the plan's digest, the disk's size and the target
  // Out: why a checkpoint found at `path` was not used (another plan, or damaged): it
  // was removed and the disk copied from the start. Empty when none was found or it
  // was used.
  std::string discarded;
};

// Copies `disk` to `target`. Throws mk::Error on failure (the pass must then be closed
// without success, so that the old change ID stays); engine::EndpointLost when the
// reader or the target could not be reached (any more). With options.progress, the plan's
// totals are set on it and its phase becomes "copying" once planned. With `checkpoint`,
// ranges flushed on the target are recorded in it and those an earlier run recorded
// for the same plan and target are not copied again; the file stays after success (the
// caller removes it once it has recorded the disk as completed).
// With `times`, where the disk's time went (seconds, steady clock): planning (block
// status, target checks, opening the checkpoint), copying (until the last write was
// confirmed) and flushing.
struct CopyTimes {
  double planning = 0, copying = 0, flushing = 0;
};
engine::CopyStats copy_disk(const DiskPass& disk, const Endpoint& target,
                            const engine::CopyOptions& options = {}, DiskCheckpoint* checkpoint = nullptr,
                            CopyTimes* times = nullptr);

// The `migratekit copy` options that select the disk's areas: "--changed-areas FILE"
// (FILE is written, JSON [{"start","length"}], mode 0600), "--dirty-bitmap NAME", or
// nothing for the whole disk. `file` is a path the caller chose in its own directory.
std::vector<std::string> copy_arguments(const DiskPass& disk, const std::string& file);

}  // namespace mk::source
