// The change-ID rules: first pass, CBT reset, incremental, CBT not active.
#include <gtest/gtest.h>

#include "common/error.h"
#include "source/change_ids.h"

namespace mk::source {
namespace {

const std::string kA = "52 3c 1f 00 11 22 33 44 55 66 77 88 99 aa bb 2a";
const std::string kB = "52 3c 1f 00 11 22 33 44 55 66 77 88 99 aa bb 2b";

TEST(ChangeIds, UuidPart) {
  EXPECT_EQ(change_id_uuid(kA + "/17"), kA);
  EXPECT_EQ(change_id_uuid("no-slash"), "");
}

TEST(ChangeIds, FirstPassAsksForAllocatedAreas) {
  auto d = decide_change_id(std::nullopt, kA + "/3", "disk0");
  EXPECT_TRUE(d.full);
  EXPECT_EQ(d.query, "*");
  EXPECT_NE(d.reason.find("first pass"), std::string::npos);
  EXPECT_TRUE(decide_change_id(std::string(""), kA + "/3", "disk0").full);
}

TEST(ChangeIds, SameUuidIsIncrementalFromTheStoredId) {
  auto d = decide_change_id(kA + "/3", kA + "/9", "disk0");
  EXPECT_FALSE(d.full);
  EXPECT_EQ(d.query, kA + "/3");
}

TEST(ChangeIds, ResetUuidForcesAFullPassWithTheReason) {
  auto d = decide_change_id(kA + "/3", kB + "/1", "[ds] vm/vm_1.vmdk");
  EXPECT_TRUE(d.full);
  EXPECT_EQ(d.query, "*");
  EXPECT_NE(d.reason.find("reset"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("[ds] vm/vm_1.vmdk"), std::string::npos) << d.reason;
  EXPECT_TRUE(decide_change_id(std::string("garbage"), kB + "/1", "d").full);
}

TEST(ChangeIds, NoChangeIdInTheSnapshotIsAnError) {
  EXPECT_THROW(decide_change_id(kA + "/3", "", "disk0"), Error);
}

}  // namespace
}  // namespace mk::source
