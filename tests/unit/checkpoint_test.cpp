// Unit tests for src/engine/checkpoint.h: the on-disk record of completed ranges.
#include "engine/checkpoint.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "common/error.h"
#include "unit_temp_dir.h"

namespace mk::engine {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kCheckpointedDisk = 8 << 20;

nlohmann::json identity(const std::string& digest = "0123456789abcdef") {
  return {{"plan", digest}, {"disk_size", 8 << 20}, {"target", "nbd+unix:///disk0"}, {"target_is_zero", true}};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      out.push_back(text.substr(pos));
      break;
    }
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

TEST(UnitCheckpoint, NewFileGetsHeader) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
  EXPECT_EQ(cp->path(), path);
  EXPECT_TRUE(cp->completed().empty());
  ASSERT_TRUE(fs::exists(path));
  std::string text = unit::read_all(path);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  auto lines = lines_of(text);
  ASSERT_EQ(lines.size(), 1u) << text;
  EXPECT_EQ(nlohmann::json::parse(lines[0]), identity());
  // The temporary file used to create it atomically is gone.
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(UnitCheckpoint, EmptyExistingFileStartsNew) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  unit::write_all(path, "");
  auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
  EXPECT_TRUE(cp->completed().empty());
  EXPECT_EQ(nlohmann::json::parse(lines_of(unit::read_all(path)).at(0)), identity());
}

TEST(UnitCheckpoint, RecordThenReopenReturnsCompletedRanges) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  {
    auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
    cp->record({{0, 4096}});
    cp->record({{8192, 4096}, {4096, 4096}});  // unsorted and adjacent
    cp->record({});                            // nothing: no line
    cp->record({{1 << 20, 512}});
    cp->record({{(1 << 20) + 100, 100}});  // inside the previous one
    // What earlier runs completed does not change while this one records.
    EXPECT_TRUE(cp->completed().empty());
  }
  auto lines = lines_of(unit::read_all(path));
  EXPECT_EQ(lines.size(), 1u + 5u);  // header + one line per range recorded

  auto again = Checkpoint::open(path, identity(), kCheckpointedDisk);
  EXPECT_EQ(again->completed(), (RangeList{{0, 12288}, {1 << 20, 512}}));
}

TEST(UnitCheckpoint, ReopenAppendsAcrossRuns) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  Checkpoint::open(path, identity(), kCheckpointedDisk)->record({{0, 100}});
  Checkpoint::open(path, identity(), kCheckpointedDisk)->record({{200, 100}});
  auto third = Checkpoint::open(path, identity(), kCheckpointedDisk);
  EXPECT_EQ(third->completed(), (RangeList{{0, 100}, {200, 100}}));
  third->record({{100, 100}});
  EXPECT_EQ(Checkpoint::open(path, identity(), kCheckpointedDisk)->completed(), (RangeList{{0, 300}}));
}

TEST(UnitCheckpoint, LargeOffsetsSurvive) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  const uint64_t big = uint64_t{3} << 40, disk = uint64_t{4} << 40;
  Checkpoint::open(path, identity(), disk)->record({{big, uint64_t{1} << 33}});
  EXPECT_EQ(Checkpoint::open(path, identity(), disk)->completed(), (RangeList{{big, uint64_t{1} << 33}}));
}

TEST(UnitCheckpoint, DifferentIdentityIsUsageError) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  Checkpoint::open(path, identity("aaaaaaaaaaaaaaaa"), kCheckpointedDisk)->record({{0, 4096}});
  std::string before = unit::read_all(path);
  try {
    Checkpoint::open(path, identity("bbbbbbbbbbbbbbbb"), kCheckpointedDisk);
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find("different"), std::string::npos) << msg;
  }
  // Any other field differing is another pass too.
  nlohmann::json fresh_changed = identity("aaaaaaaaaaaaaaaa");
  fresh_changed["target_is_zero"] = false;
  EXPECT_THROW(Checkpoint::open(path, fresh_changed, kCheckpointedDisk), UsageError);
  nlohmann::json extra = identity("aaaaaaaaaaaaaaaa");
  extra["connections"] = 4;
  EXPECT_THROW(Checkpoint::open(path, extra, kCheckpointedDisk), UsageError);
  // The refused checkpoint is left exactly as it was.
  EXPECT_EQ(unit::read_all(path), before);
  EXPECT_EQ(Checkpoint::open(path, identity("aaaaaaaaaaaaaaaa"), kCheckpointedDisk)->completed(), (RangeList{{0, 4096}}));
}

TEST(UnitCheckpoint, HeaderThatIsNotJsonIsUsageError) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  unit::write_all(path, "this is not a checkpoint\n0 4096\n");
  try {
    Checkpoint::open(path, identity(), kCheckpointedDisk);
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(UnitCheckpoint, TornLastLineIsIgnoredAndRepaired) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  Checkpoint::open(path, identity(), kCheckpointedDisk)->record({{0, 4096}, {8192, 4096}});
  // A crash in the middle of writing "16384 4096\n".
  {
    std::string text = unit::read_all(path);
    unit::write_all(path, text + "16384 40");
  }
  {
    auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
    EXPECT_EQ(cp->completed(), (RangeList{{0, 4096}, {8192, 4096}}));
    // The torn bytes are gone, so this record starts on a line of its own.
    EXPECT_EQ(unit::read_all(path).back(), '\n');
    cp->record({{1 << 20, 4096}});
  }
  auto lines = lines_of(unit::read_all(path));
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[3], "1048576 4096");
  auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
  EXPECT_EQ(cp->completed(), (RangeList{{0, 4096}, {8192, 4096}, {1 << 20, 4096}}));
}

TEST(UnitCheckpoint, TornCompleteLookingLineWithoutNewlineIsIgnored) {
  // Without its newline a record was not confirmed durable, even if its digits look whole.
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  Checkpoint::open(path, identity(), kCheckpointedDisk)->record({{0, 4096}});
  unit::write_all(path, unit::read_all(path) + "4096 4096");
  auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
  EXPECT_EQ(cp->completed(), (RangeList{{0, 4096}}));
  cp->record({{65536, 1}});
  cp.reset();
  EXPECT_EQ(Checkpoint::open(path, identity(), kCheckpointedDisk)->completed(), (RangeList{{0, 4096}, {65536, 1}}));
}

TEST(UnitCheckpoint, ConcurrentRecordsAllLand) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  {
    auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < 25; ++i) {
          uint64_t block = static_cast<uint64_t>(i * 4 + t);
          cp->record({{block * 4096, 4096}});
        }
      });
    }
    for (auto& th : threads) th.join();
  }
  EXPECT_EQ(Checkpoint::open(path, identity(), kCheckpointedDisk)->completed(), (RangeList{{0, 100 * 4096}}));
}

TEST(UnitCheckpoint, RemoveDeletesTheFile) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  auto cp = Checkpoint::open(path, identity(), kCheckpointedDisk);
  cp->record({{0, 4096}});
  ASSERT_TRUE(fs::exists(path));
  cp->remove();
  EXPECT_FALSE(fs::exists(path));
  cp->remove();  // twice is harmless
  EXPECT_FALSE(fs::exists(path));
  cp.reset();
  // The next pass starts from nothing.
  EXPECT_TRUE(Checkpoint::open(path, identity("ffffffffffffffff"), kCheckpointedDisk)->completed().empty());
}

TEST(UnitCheckpoint, DamagedOrOutOfRangeLinesAreRefused) {
  for (const char* bad : {"0 99999999999\n", "-5 10\n", "12\n", "0 0\n", "4096 x\n", "8388608 1\n"}) {
    unit::TempDir dir;
    std::string path = dir.file("disk0.ckpt");
    Checkpoint::open(path, identity(), kCheckpointedDisk)->record({{0, 4096}});
    {
      std::ofstream out(path, std::ios::app);
      out << bad;
    }
    try {
      Checkpoint::open(path, identity(), kCheckpointedDisk);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find("damaged at line 3"), std::string::npos) << e.what();
    }
  }
}

// A header with a number too large for a double is nlohmann's out_of_range, not a
// parse_error: it escaped Checkpoint::open as such (same class as the changed_areas fuzz
// target's finding, fuzz/checkpoint.cpp covers it).
TEST(UnitCheckpoint, HeaderWithANumberTooLargeForADoubleIsRefused) {
  unit::TempDir dir;
  std::string path = dir.file("disk0.ckpt");
  {
    std::ofstream out(path);
    out << "{\"disk_size\":1e999}\n0 4096\n";
  }
  try {
    Checkpoint::open(path, identity(), kCheckpointedDisk);
    ADD_FAILURE() << "accepted a header with 1e999";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("not a migratekit checkpoint"), std::string::npos) << e.what();
  }
  // The checkpoint fuzz target's input (fuzz/checkpoint.cpp), after its selector byte.
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << std::string("1e824,\"plan*:\"ketj{\"kab\xdf_si&',737~'&\xf0 4\0" "40", 42);
  }
  try {
    Checkpoint::open(path, identity(), kCheckpointedDisk);
    ADD_FAILURE() << "accepted a header with 1e999";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("not a migratekit checkpoint"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mk::engine
