// Copying one disk of a pass with the copy engine: plan from the pass's request (changed
// areas or dirty bitmap) intersected with the source's block status, then copy. Or, for
// a VMA that runs `migratekit copy` per disk, the arguments that select the same areas.
// Blocking; safe to call from several threads for different disks.
#pragma once

#include <string>
#include <vector>

#include "common/endpoint.h"
#include "engine/copier.h"
#include "source/source_driver.h"

namespace mk::source {

// Copies `disk` to `target`. Throws mk::Error on failure (the pass must then be closed
// without success, so that the old change ID stays). With options.progress, the plan's
// totals are set on it and its phase becomes "copying" once planned.
// With `times`, where the disk's time went (seconds, steady clock): planning (block
// status, target checks), copying (until the last write was confirmed) and flushing.
struct CopyTimes {
  double planning = 0, copying = 0, flushing = 0;
};
engine::CopyStats copy_disk(const DiskPass& disk, const Endpoint& target,
                            const engine::CopyOptions& options = {}, CopyTimes* times = nullptr);

// The `migratekit copy` options that select the disk's areas: "--changed-areas FILE"
// (FILE is written, JSON [{"start","length"}], mode 0600), "--dirty-bitmap NAME", or
// nothing for the whole disk. `file` is a path the caller chose in its own directory.
std::vector<std::string> copy_arguments(const DiskPass& disk, const std::string& file);

}  // namespace mk::source
