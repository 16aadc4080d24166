// Reading a changed-areas file: the list of byte ranges an incremental pass must copy.
//
// The file is a JSON array of {"start": bytes, "length": bytes} objects, the field names
// of vSphere's DiskChangeExtent, as QueryChangedDiskAreas returns them.
#pragma once

#include <cstdint>
#include <string>

#include "common/range.h"

namespace mk::engine {

// Parses `text` (the contents of `source_name`) and checks every area against
// `disk_size`. Throws UsageError naming the file, the element and the problem for
// malformed JSON, missing or non-integer fields, negative values, zero-length areas
// and areas past the end of the disk. Returns the areas normalised.
RangeList parse_changed_areas(const std::string& text, const std::string& source_name,
                              uint64_t disk_size);

// Reads and parses a file; throws UsageError when it cannot be read.
RangeList load_changed_areas(const std::string& path, uint64_t disk_size);

}  // namespace mk::engine
