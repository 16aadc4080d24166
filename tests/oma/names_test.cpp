// Validation of identifiers before they reach file names, symlinks or config files.
#include <gtest/gtest.h>

#include "common/error.h"
#include "oma/names.h"

namespace mk::oma {
namespace {

TEST(Names, UuidShapeIsStrict) {
  EXPECT_TRUE(is_uuid("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d"));
  EXPECT_FALSE(is_uuid("4210A4C2-6B57-4D4B-9D8E-0C1F2A3B4C5D"));  // uppercase: normalise first
  EXPECT_FALSE(is_uuid("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5"));
  EXPECT_FALSE(is_uuid("../../../../etc/passwd-0000-000000000"));
  EXPECT_FALSE(is_uuid(std::string("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5\0", 36)));
  EXPECT_TRUE(is_uuid(new_uuid()));
  EXPECT_NE(new_uuid(), new_uuid());
}

TEST(Names, MacAddressShape) {
  EXPECT_TRUE(is_mac_address("00:50:56:aa:BB:cc"));
  for (const char* bad : {"", "00:50:56:aa:bb", "00:50:56:aa:bb:cc:dd", "00-50-56-aa-bb-cc", "00:50:56:aa:bb:cg",
                          "0:050:56:aa:bb:cc"})
    EXPECT_FALSE(is_mac_address(bad)) << bad;
}

TEST(Names, ExportNamesRoundTrip) {
  std::string n = export_name("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", 3);
  EXPECT_EQ(n, "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk3");
  EXPECT_TRUE(is_export_name(n));
  EXPECT_FALSE(is_export_name(n + "/x"));
  EXPECT_FALSE(is_export_name("migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk256"));
  EXPECT_FALSE(is_export_name("migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk01"));
  EXPECT_FALSE(is_export_name("../migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk1"));
  EXPECT_THROW(export_name("not-a-uuid", 0), UsageError);
  EXPECT_THROW(export_name("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", -1), UsageError);
}

TEST(Names, DisplayNamesRejectSeparatorsAndControlCharacters) {
  EXPECT_NO_THROW(check_display_name("web-01 (prod)", "name"));
  EXPECT_THROW(check_display_name("a/b", "name"), UsageError);
  EXPECT_THROW(check_display_name("a\\b", "name"), UsageError);
  EXPECT_THROW(check_display_name("a\nb", "name"), UsageError);
  EXPECT_THROW(check_display_name(std::string("a\0b", 3), "name"), UsageError);
  EXPECT_THROW(check_display_name("", "name"), UsageError);
  EXPECT_THROW(check_display_name(std::string(300, 'x'), "name"), UsageError);
  try {
    check_disk_key("20x0", "disks[1].key");
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("disks[1].key"), std::string::npos);
  }
}

}  // namespace
}  // namespace mk::oma
