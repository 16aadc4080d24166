// Unit tests for src/engine/changed_areas.h: parse_changed_areas and load_changed_areas.
#include "engine/changed_areas.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "common/error.h"
#include "unit_temp_dir.h"

namespace mk::engine {
namespace {

constexpr uint64_t kAreasDisk = 1 << 20;  // 1 MiB
constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

// Parses `text` expecting a UsageError; returns its message.
std::string parse_error(const std::string& text, uint64_t disk_size = kAreasDisk) {
  try {
    parse_changed_areas(text, "areas.json", disk_size);
  } catch (const UsageError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected mk::UsageError for " << text << ", got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected mk::UsageError for " << text << ", but it parsed";
  return "";
}

// The message names the file and contains `problem`.
#define EXPECT_USAGE_ERROR(text, problem)                                      \
  do {                                                                         \
    std::string msg_ = parse_error(text);                                      \
    EXPECT_NE(msg_.find("areas.json"), std::string::npos) << msg_;             \
    EXPECT_NE(msg_.find(problem), std::string::npos) << "message: " << msg_;   \
  } while (0)

// ---------------------------------------------------------------- valid input

TEST(UnitChangedAreas, SingleArea) {
  EXPECT_EQ(parse_changed_areas(R"([{"start": 0, "length": 4096}])", "a", kAreasDisk),
            (RangeList{{0, 4096}}));
}

TEST(UnitChangedAreas, FieldOrderDoesNotMatter) {
  EXPECT_EQ(parse_changed_areas(R"([{"length": 10, "start": 20}])", "a", kAreasDisk),
            (RangeList{{20, 10}}));
}

TEST(UnitChangedAreas, EmptyArrayMeansNothingToCopy) {
  EXPECT_TRUE(parse_changed_areas("[]", "a", kAreasDisk).empty());
  EXPECT_TRUE(parse_changed_areas(" [ ] \n", "a", kAreasDisk).empty());
  EXPECT_TRUE(parse_changed_areas("[]", "a", 0).empty());
}

TEST(UnitChangedAreas, UnsortedOverlappingAdjacentAreasAreNormalised) {
  std::string text = R"([
    {"start": 65536, "length": 4096},
    {"start": 0, "length": 8192},
    {"start": 4096, "length": 8192},
    {"start": 12288, "length": 4096},
    {"start": 66000, "length": 100},
    {"start": 200000, "length": 1}
  ])";
  EXPECT_EQ(parse_changed_areas(text, "a", kAreasDisk),
            (RangeList{{0, 16384}, {65536, 4096}, {200000, 1}}));
}

TEST(UnitChangedAreas, AreaEndingExactlyAtEndOfDisk) {
  EXPECT_EQ(parse_changed_areas(R"([{"start": 1048575, "length": 1}])", "a", kAreasDisk),
            (RangeList{{kAreasDisk - 1, 1}}));
  EXPECT_EQ(parse_changed_areas(R"([{"start": 0, "length": 1048576}])", "a", kAreasDisk),
            (RangeList{{0, kAreasDisk}}));
}

TEST(UnitChangedAreas, LargeDiskValues) {
  // 2 TiB disk, an area in its last MiB: values beyond 32 bits survive intact.
  uint64_t disk = uint64_t{2} << 40;
  std::string text = "[{\"start\": " + std::to_string(disk - (1 << 20)) + ", \"length\": 1048576}]";
  EXPECT_EQ(parse_changed_areas(text, "a", disk), (RangeList{{disk - (1 << 20), 1 << 20}}));
}

TEST(UnitChangedAreas, UnsignedMaximumWithinHugeDisk) {
  // Values above INT64_MAX are unsigned integers in JSON and still valid.
  uint64_t start = (uint64_t{1} << 63) + 5;
  std::string text = "[{\"start\": " + std::to_string(start) + ", \"length\": 10}]";
  EXPECT_EQ(parse_changed_areas(text, "a", kMax), (RangeList{{start, 10}}));
}

TEST(UnitChangedAreas, LoadFromFile) {
  unit::TempDir dir;
  std::string path = dir.file("changed.json");
  unit::write_all(path, R"([{"start": 4096, "length": 4096}, {"start": 0, "length": 4096}])");
  EXPECT_EQ(load_changed_areas(path, kAreasDisk), (RangeList{{0, 8192}}));
}

TEST(UnitChangedAreas, LoadMissingFileIsUsageError) {
  unit::TempDir dir;
  std::string path = dir.file("missing.json");
  try {
    load_changed_areas(path, kAreasDisk);
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(UnitChangedAreas, LoadErrorNamesThePath) {
  unit::TempDir dir;
  std::string path = dir.file("bad.json");
  unit::write_all(path, R"([{"start": 0}])");
  try {
    load_changed_areas(path, kAreasDisk);
    FAIL() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("missing \"length\""), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- malformed input

TEST(UnitChangedAreas, NotJson) {
  EXPECT_USAGE_ERROR("", "not valid JSON");
  EXPECT_USAGE_ERROR("hello", "not valid JSON");
  EXPECT_USAGE_ERROR("[{\"start\": 0, \"length\": 1}", "not valid JSON");  // unterminated
  EXPECT_USAGE_ERROR("[] []", "not valid JSON");                          // trailing garbage
  EXPECT_USAGE_ERROR("[{'start': 0, 'length': 1}]", "not valid JSON");    // single quotes
}

TEST(UnitChangedAreas, NotAnArray) {
  EXPECT_USAGE_ERROR("{}", "expected a JSON array");
  EXPECT_USAGE_ERROR(R"({"start": 0, "length": 1})", "expected a JSON array");
  EXPECT_USAGE_ERROR("42", "expected a JSON array");
  EXPECT_USAGE_ERROR("\"[]\"", "expected a JSON array");
  EXPECT_USAGE_ERROR("null", "expected a JSON array");
}

TEST(UnitChangedAreas, ElementNotAnObject) {
  EXPECT_USAGE_ERROR("[1]", "expected an object");
  EXPECT_USAGE_ERROR("[[0, 4096]]", "expected an object");
  EXPECT_USAGE_ERROR("[null]", "expected an object");
  EXPECT_USAGE_ERROR("[\"0 4096\"]", "expected an object");
}

TEST(UnitChangedAreas, ErrorNamesTheElementIndex) {
  std::string msg = parse_error(R"([{"start": 0, "length": 1}, {"start": 10, "length": 1}, 7])");
  EXPECT_NE(msg.find("element 2"), std::string::npos) << msg;
}

TEST(UnitChangedAreas, MissingStart) { EXPECT_USAGE_ERROR(R"([{"length": 4096}])", "missing \"start\""); }

TEST(UnitChangedAreas, MissingLength) { EXPECT_USAGE_ERROR(R"([{"start": 0}])", "missing \"length\""); }

TEST(UnitChangedAreas, EmptyObject) { EXPECT_USAGE_ERROR("[{}]", "missing"); }

TEST(UnitChangedAreas, NonIntegerStart) {
  for (const char* v : {"1.5", "0.0", "1e3", "\"0\"", "true", "false", "null", "[]", "{}"}) {
    std::string text = std::string("[{\"start\": ") + v + ", \"length\": 4096}]";
    std::string msg = parse_error(text);
    EXPECT_NE(msg.find("\"start\" must be a whole number"), std::string::npos) << v << ": " << msg;
  }
}

TEST(UnitChangedAreas, NonIntegerLength) {
  for (const char* v : {"4096.5", "4096.0", "4e3", "\"4096\"", "true", "false", "null", "[4096]"}) {
    std::string text = std::string("[{\"start\": 0, \"length\": ") + v + "}]";
    std::string msg = parse_error(text);
    EXPECT_NE(msg.find("\"length\" must be a whole number"), std::string::npos) << v << ": " << msg;
  }
}

TEST(UnitChangedAreas, NegativeStart) {
  EXPECT_USAGE_ERROR(R"([{"start": -1, "length": 4096}])", "\"start\" is negative");
  EXPECT_USAGE_ERROR(R"([{"start": -9223372036854775808, "length": 1}])", "\"start\" is negative");
}

TEST(UnitChangedAreas, NegativeLength) {
  EXPECT_USAGE_ERROR(R"([{"start": 0, "length": -4096}])", "\"length\" is negative");
}

TEST(UnitChangedAreas, ZeroLength) {
  EXPECT_USAGE_ERROR(R"([{"start": 0, "length": 0}])", "\"length\" is 0");
  EXPECT_USAGE_ERROR(R"([{"start": 4096, "length": -0}])", "\"length\" is 0");
}

TEST(UnitChangedAreas, UnknownField) {
  EXPECT_USAGE_ERROR(R"([{"start": 0, "length": 1, "end": 1}])", "unknown field \"end\"");
  EXPECT_USAGE_ERROR(R"([{"Start": 0, "length": 1}])", "unknown field \"Start\"");
  EXPECT_USAGE_ERROR(R"([{"start": 0, "length": 1, "": 0}])", "unknown field \"\"");
}

TEST(UnitChangedAreas, AreaPastTheEndOfTheDisk) {
  EXPECT_USAGE_ERROR(R"([{"start": 1048576, "length": 1}])", "past the end of the disk");
  EXPECT_USAGE_ERROR(R"([{"start": 1048575, "length": 2}])", "past the end of the disk");
  EXPECT_USAGE_ERROR(R"([{"start": 0, "length": 1048577}])", "past the end of the disk");
  EXPECT_USAGE_ERROR(R"([{"start": 2000000, "length": 4096}])", "past the end of the disk");
  // The message tells the disk size so the operator can compare.
  std::string msg = parse_error(R"([{"start": 1048576, "length": 1}])");
  EXPECT_NE(msg.find("1048576 bytes"), std::string::npos) << msg;
}

TEST(UnitChangedAreas, AnyAreaOnAnEmptyDiskIsPastTheEnd) {
  std::string msg = parse_error(R"([{"start": 0, "length": 1}])", 0);
  EXPECT_NE(msg.find("past the end of the disk"), std::string::npos) << msg;
}

TEST(UnitChangedAreas, StartPlusLengthOverflowingUint64) {
  // Each value alone fits in uint64 and in the disk; their sum wraps around.
  std::string text = "[{\"start\": " + std::to_string(uint64_t{1} << 63) +
                     ", \"length\": " + std::to_string(uint64_t{1} << 63) + "}]";
  std::string msg = parse_error(text, kMax);
  EXPECT_NE(msg.find("past the end of the disk"), std::string::npos) << msg;

  text = "[{\"start\": 1, \"length\": " + std::to_string(kMax) + "}]";
  msg = parse_error(text, kMax);
  EXPECT_NE(msg.find("past the end of the disk"), std::string::npos) << msg;

  text = "[{\"start\": " + std::to_string(kMax) + ", \"length\": " + std::to_string(kMax) + "}]";
  msg = parse_error(text, kMax);
  EXPECT_NE(msg.find("past the end of the disk"), std::string::npos) << msg;
}

TEST(UnitChangedAreas, HugeNumbers) {
  // Larger than uint64: JSON parsers turn these into floating point, never a wrapped integer.
  EXPECT_USAGE_ERROR(R"([{"start": 18446744073709551616, "length": 1}])", "\"start\" must be a whole number");
  EXPECT_USAGE_ERROR(R"([{"start": 0, "length": 100000000000000000000000000000}])",
                     "\"length\" must be a whole number");
  EXPECT_USAGE_ERROR(R"([{"start": -100000000000000000000000000000, "length": 1}])", "\"start\"");
  // The largest uint64 is a valid integer, but past the end of a 1 MiB disk.
  EXPECT_USAGE_ERROR(R"([{"start": 18446744073709551615, "length": 1}])", "past the end of the disk");
}

TEST(UnitChangedAreas, OneBadElementRejectsTheWholeFile) {
  std::string msg = parse_error(R"([{"start": 0, "length": 4096}, {"start": 4096, "length": 0}])");
  EXPECT_NE(msg.find("element 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"length\" is 0"), std::string::npos) << msg;
}

// An area whose start + length overflows must not be described by a wrapped-around end.
TEST(UnitChangedAreas, OverflowMessageDoesNotShowWrappedEnd) {
  std::string text = "[{\"start\": " + std::to_string(uint64_t{1} << 63) +
                     ", \"length\": " + std::to_string(uint64_t{1} << 63) + "}]";
  std::string msg = parse_error(text, kMax);
  EXPECT_EQ(msg.find(", 0)"), std::string::npos) << msg;
}

// Found by the changed_areas fuzz target (fuzz/changed_areas.cpp): a number too large
// for a double is nlohmann's out_of_range, not a parse_error, and escaped as such.
TEST(UnitChangedAreas, NumberTooLargeForADoubleIsAUsageError) {
  const std::string found("[777777E7555553[555554t\0" "050}]", 29);  // the fuzzer's input, NUL included
  EXPECT_NE(parse_error(found, 4096).find("not valid JSON"), std::string::npos);
  EXPECT_NE(parse_error(R"([{"start":1e999,"length":1}])").find("not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace mk::engine
