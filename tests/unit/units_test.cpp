// Unit tests for src/common/units.h: parse_size and format_bytes.
#include "common/units.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>

#include "common/error.h"

namespace mk {
namespace {

constexpr uint64_t TiB = 1024 * GiB;
constexpr uint64_t kMaxU64 = std::numeric_limits<uint64_t>::max();

uint64_t parse(std::string_view s) { return parse_size(s, "--size"); }

TEST(UnitUnits, Constants) {
  EXPECT_EQ(KiB, 1024u);
  EXPECT_EQ(MiB, 1048576u);
  EXPECT_EQ(GiB, 1073741824u);
}

TEST(UnitUnits, ParsePlainNumbers) {
  EXPECT_EQ(parse("0"), 0u);
  EXPECT_EQ(parse("1"), 1u);
  EXPECT_EQ(parse("4096"), 4096u);
  EXPECT_EQ(parse("0004096"), 4096u);
  EXPECT_EQ(parse("18446744073709551615"), kMaxU64);
}

TEST(UnitUnits, ParseBinarySuffixes) {
  EXPECT_EQ(parse("64K"), 64 * KiB);
  EXPECT_EQ(parse("4M"), 4 * MiB);
  EXPECT_EQ(parse("1G"), GiB);
  EXPECT_EQ(parse("2T"), 2 * TiB);
  EXPECT_EQ(parse("0K"), 0u);
  EXPECT_EQ(parse("0T"), 0u);
}

TEST(UnitUnits, ParseIBAndBSuffixes) {
  EXPECT_EQ(parse("4MiB"), 4 * MiB);
  EXPECT_EQ(parse("4MB"), 4 * MiB);  // binary multiples, as documented
  EXPECT_EQ(parse("64KiB"), 64 * KiB);
  EXPECT_EQ(parse("1GiB"), GiB);
  EXPECT_EQ(parse("2TiB"), 2 * TiB);
  EXPECT_EQ(parse("512B"), 512u);
}

TEST(UnitUnits, ParseLowerCaseSuffixes) {
  EXPECT_EQ(parse("64k"), 64 * KiB);
  EXPECT_EQ(parse("4m"), 4 * MiB);
  EXPECT_EQ(parse("1g"), GiB);
  EXPECT_EQ(parse("2t"), 2 * TiB);
  EXPECT_EQ(parse("512b"), 512u);
  EXPECT_EQ(parse("4miB"), 4 * MiB);
  EXPECT_EQ(parse("4mB"), 4 * MiB);
}

TEST(UnitUnits, ParseLargestValuesThatFit) {
  EXPECT_EQ(parse("16777215T"), 16777215 * TiB);
  EXPECT_EQ(parse("17179869183G"), 17179869183 * GiB);
  EXPECT_EQ(parse("18014398509481983K"), 18014398509481983 * KiB);
}

// Expects a UsageError whose message names `what` and the offending text.
void expect_bad(const std::string& text) {
  try {
    parse_size(text, "--request-size");
    ADD_FAILURE() << "'" << text << "' parsed as a size";
  } catch (const UsageError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("--request-size"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + text + "'"), std::string::npos) << msg;
  } catch (const std::exception& e) {
    ADD_FAILURE() << "'" << text << "': expected UsageError, got " << e.what();
  }
}

TEST(UnitUnits, ParseErrors) {
  for (const char* bad : {"", "K", "M", "iB", "-1", "+1", " 4", "4 ", "4 M", "1.5M", "1,5M", "4X",
                          "4KK", "4MiBB", "4Mi", "4iB", "4BB", "4Bi", "0x10", "1e6", "4M ", "abc"}) {
    expect_bad(bad);
  }
}

TEST(UnitUnits, ParseOverflow) {
  expect_bad("18446744073709551616");   // 2^64
  expect_bad("99999999999999999999");
  expect_bad("100000000000000000000000");
  expect_bad("16777216T");              // 2^24 TiB = 2^64
  expect_bad("17179869184G");           // 2^34 GiB = 2^64
  expect_bad("18014398509481984K");     // 2^54 KiB = 2^64
  expect_bad("18446744073709551615K");
}

TEST(UnitUnits, FormatBytesBelowOneKiB) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(17), "17 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
}

TEST(UnitUnits, FormatBytesBinaryUnits) {
  EXPECT_EQ(format_bytes(1024), "1.0 KiB");
  EXPECT_EQ(format_bytes(1536), "1.5 KiB");
  EXPECT_EQ(format_bytes(4 * MiB), "4.0 MiB");
  EXPECT_EQ(format_bytes(GiB + GiB / 2), "1.5 GiB");
  EXPECT_EQ(format_bytes(2 * TiB), "2.0 TiB");
  EXPECT_EQ(format_bytes(1024 * TiB), "1.0 PiB");
  // PiB is the largest unit.
  EXPECT_EQ(format_bytes(kMaxU64), "16384.0 PiB");
}

TEST(UnitUnits, FormatThenParseRoundTripsWholeUnits) {
  for (uint64_t v : {KiB, 3 * MiB, 7 * GiB, 5 * TiB}) {
    std::string s = format_bytes(v);  // "N.0 XiB"
    auto dot = s.find(".0 ");
    ASSERT_NE(dot, std::string::npos) << s;
    std::string compact = s.substr(0, dot) + s.substr(dot + 3);  // "NXiB"
    EXPECT_EQ(parse(compact), v) << s;
  }
}

TEST(UnitUnits, FormatBytesMatchesHeaderExample) {
  EXPECT_EQ(format_bytes(512 * KiB), "512.0 KiB");
  EXPECT_EQ(format_bytes(17), "17 B");
}

// A value just under the next unit must not print as "1024.0 KiB".
TEST(UnitUnits, FormatBytesRoundsIntoNextUnit) {
  EXPECT_EQ(format_bytes(MiB - 1), "1.0 MiB");
  EXPECT_EQ(format_bytes(GiB - 1), "1.0 GiB");
}

// The whole suffix is case-insensitive: an operator typing --request-size 4mb is understood.
TEST(UnitUnits, ParseWholeSuffixCaseInsensitive) {
  const std::pair<const char*, uint64_t> cases[] = {
      {"4mb", 4 * MiB}, {"4mib", 4 * MiB}, {"64kb", 64 * KiB}, {"4MIB", 4 * MiB}};
  for (const auto& [text, expected] : cases) {
    try {
      EXPECT_EQ(parse(text), expected) << text;
    } catch (const UsageError& e) {
      ADD_FAILURE() << text << ": " << e.what();
    }
  }
}

}  // namespace
}  // namespace mk
