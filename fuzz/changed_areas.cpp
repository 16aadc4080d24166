// libFuzzer target: the changed-areas file (engine/changed_areas.h), a JSON array of
// {"start", "length"} the VMA gets from QueryChangedDiskAreas and `migratekit copy
// --changed-areas` reads. Input: a selector byte (the disk size, ranges_check.h), then
// the file's text. Checks: only mk::Error escapes; a result is normalised and within
// the disk.
#include "engine/changed_areas.h"
#include "ranges_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  uint64_t disk_size = mk::fuzz::disk_size_for(in.selector);
  mk::fuzz::expect_error([&] {
    mk::RangeList areas = mk::engine::parse_changed_areas(in.text, "fuzz.json", disk_size);
    mk::fuzz::check_ranges(areas, disk_size, "changed areas");
  });
  return 0;
}
