// Copying one disk of a pass with the copy engine: plan from the pass's request (changed
// areas or dirty bitmap) intersected with the source's block status, then copy.
// Blocking; safe to call from several threads for different disks.
#pragma once

#include "engine/copier.h"
#include "source/source_driver.h"

namespace mk::source {

// Copies `disk` to `target`. Throws mk::Error on failure (the pass must then be closed
// without success, so that the old change ID stays).
engine::CopyStats copy_disk(const DiskPass& disk, const engine::Endpoint& target,
                            const engine::CopyOptions& options = {});

}  // namespace mk::source
