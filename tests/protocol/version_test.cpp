// The protocol version check: equal versions pass; any other version, none, or one that
// is not a number is refused with a message naming both versions and what to upgrade.
#include "protocol/version.h"

#include <gtest/gtest.h>

namespace mk::protocol {
namespace {

std::string refusal(Side self, const std::optional<std::string>& header, int ours = kVersion) {
  try {
    check_peer_header(self, header, ours);
  } catch (const VersionMismatch& e) {
    return e.what();
  }
  return "";
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(Version, TheSameVersionPasses) {
  EXPECT_EQ(refusal(Side::Oma, std::to_string(kVersion)), "");
  EXPECT_EQ(refusal(Side::Vma, std::to_string(kVersion)), "");
  EXPECT_NO_THROW(check_peer_version(Side::Vma, kVersion));
}

TEST(Version, ANewerPeerIsRefusedAskingToUpgradeThisSide) {
  std::string m = refusal(Side::Oma, "3", 2);
  EXPECT_TRUE(has(m, "the VMA speaks protocol version 3")) << m;
  EXPECT_TRUE(has(m, "this OMA speaks version 2")) << m;
  EXPECT_TRUE(has(m, "upgrade the OMA")) << m;
  m = refusal(Side::Vma, "3", 2);
  EXPECT_TRUE(has(m, "the OMA speaks protocol version 3")) << m;
  EXPECT_TRUE(has(m, "upgrade the VMA")) << m;
}

TEST(Version, AnOlderPeerIsRefusedAskingToUpgradeThePeer) {
  std::string m = refusal(Side::Oma, "1", 2);
  EXPECT_TRUE(has(m, "the VMA speaks protocol version 1 and this OMA speaks version 2")) << m;
  EXPECT_TRUE(has(m, "upgrade the VMA to the OMA's release (one that speaks version 2)")) << m;
  m = refusal(Side::Vma, "1", 2);
  EXPECT_TRUE(has(m, "upgrade the OMA to the VMA's release")) << m;
}

TEST(Version, APeerWithoutAVersionIsOlderThanVersioning) {
  for (auto header : {std::optional<std::string>(), std::optional<std::string>("")}) {
    std::string m = refusal(Side::Vma, header);
    EXPECT_TRUE(has(m, "the OMA sent no protocol version")) << m;
    EXPECT_TRUE(has(m, "this VMA speaks version " + std::to_string(kVersion))) << m;
    EXPECT_TRUE(has(m, "upgrade the OMA")) << m;
  }
  try {
    check_peer_version(Side::Oma, std::nullopt);
    FAIL();
  } catch (const VersionMismatch& e) {
    EXPECT_EQ(e.ours(), kVersion);
    EXPECT_FALSE(e.theirs());
  }
}

TEST(Version, AHeaderThatIsNotANumberIsRefusedAndShownSafely) {
  for (std::string bad : {"1.0", "v1", "-1", "1 ", "\x01\x02"}) {
    std::string m = refusal(Side::Oma, bad);
    EXPECT_TRUE(has(m, "is not a protocol version")) << bad << ": " << m;
    EXPECT_TRUE(has(m, "this OMA speaks version")) << m;
    EXPECT_EQ(m.find('\x01'), std::string::npos);
  }
}

TEST(Version, TheMismatchCarriesBothVersions) {
  try {
    check_peer_version(Side::Vma, 7, 2);
    FAIL();
  } catch (const VersionMismatch& e) {
    EXPECT_EQ(e.ours(), 2);
    EXPECT_EQ(e.theirs().value_or(0), 7);
  }
}

}  // namespace
}  // namespace mk::protocol
