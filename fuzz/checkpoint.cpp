// libFuzzer target: the checkpoint file (engine/checkpoint.h) a copy pass appends to and
// a rerun after a crash reads back. Input: a selector byte (the disk size,
// ranges_check.h), then the file's content, written to a file in a private temporary
// directory and opened. The identity the reader expects is the file's own first line
// when bit 0 says so and it is JSON (so the fuzzer reaches the range lines), otherwise
// a fixed one.
// Checks: only mk::Error escapes; the completed ranges are normalised and within the
// disk, and reopening the file (which open() may have repaired) gives the same ranges.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/checkpoint.h"
#include "ranges_check.h"

namespace {

std::string checkpoint_path() { return mk::fuzz::private_temp_dir("mk-fuzz-checkpoint") + "/checkpoint"; }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  uint64_t disk_size = mk::fuzz::disk_size_for(in.selector >> 1);
  const std::string path = checkpoint_path();
  ::unlink(path.c_str());
  {
    std::ofstream out(path, std::ios::binary);
    out << in.text;
  }
  nlohmann::json identity = {{"plan", "fuzz"}, {"disk_size", disk_size}};
  auto newline = in.text.find('\n');
  auto header = nlohmann::json::parse(in.text.substr(0, newline), nullptr, /*allow_exceptions=*/false);
  if (!header.is_discarded() && (in.selector & 1)) identity = header;

  mk::RangeList first;
  bool opened = mk::fuzz::expect_error([&] {
    auto cp = mk::engine::Checkpoint::open(path, identity, disk_size);
    first = cp->completed();
  });
  if (!opened) return 0;
  mk::fuzz::check_ranges(first, disk_size, "checkpoint");
  auto again = mk::engine::Checkpoint::open(path, identity, disk_size);
  if (again->completed().size() != first.size()) mk::fuzz::fail("reopening a checkpoint changed its ranges");
  for (size_t i = 0; i < first.size(); ++i) {
    if (again->completed()[i].start != first[i].start || again->completed()[i].length != first[i].length) {
      mk::fuzz::fail("reopening a checkpoint changed its ranges");
    }
  }
  return 0;
}
