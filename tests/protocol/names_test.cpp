// The naming rules: identifiers are allow-listed before they reach file names, symlinks,
// export names or config files, and refusals name the field.
#include "protocol/names.h"

#include <gtest/gtest.h>

#include <map>
#include <regex>

#include "common/json_schema.h"

namespace mk::protocol {
namespace {

using schema::FieldError;

std::string field_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const FieldError& e) {
    return e.field();
  }
  return "";
}

TEST(Names, UuidShapeIsStrict) {
  EXPECT_TRUE(is_uuid("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d"));
  EXPECT_FALSE(is_uuid("4210A4C2-6B57-4D4B-9D8E-0C1F2A3B4C5D"));  // uppercase: normalise first
  EXPECT_FALSE(is_uuid("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5"));
  EXPECT_FALSE(is_uuid("../../../../etc/passwd-0000-000000000"));
  EXPECT_FALSE(is_uuid(std::string("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5\0", 36)));
  EXPECT_EQ(field_of([] { check_uuid("x", "job_id"); }), "job_id");
}

TEST(Names, NewUuidsAreVersion4AndDistinct) {
  std::string a = new_uuid(), b = new_uuid();
  EXPECT_TRUE(is_uuid(a)) << a;
  EXPECT_NE(a, b);
  EXPECT_EQ(a[14], '4');                                               // version 4
  EXPECT_NE(std::string("89ab").find(a[19]), std::string::npos) << a;  // variant 10xx
}

TEST(Names, MacAddressShape) {
  EXPECT_TRUE(is_mac_address("00:50:56:aa:BB:cc"));
  for (const char* bad :
       {"", "00:50:56:aa:bb", "00:50:56:aa:bb:cc:dd", "00-50-56-aa-bb-cc", "00:50:56:aa:bb:cg", "0:050:56:aa:bb:cc"})
    EXPECT_FALSE(is_mac_address(bad)) << bad;
}

TEST(Names, ExportNamesRoundTrip) {
  std::string n = export_name("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", 3);
  EXPECT_EQ(n, "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk3");
  EXPECT_TRUE(is_export_name(n));
  EXPECT_TRUE(is_export_name("migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk255"));
  EXPECT_FALSE(is_export_name(n + "/x"));
  EXPECT_FALSE(is_export_name("migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk256"));
  EXPECT_FALSE(is_export_name("migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk01"));
  EXPECT_FALSE(is_export_name("migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk"));
  EXPECT_FALSE(is_export_name("../migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk1"));
  EXPECT_EQ(field_of([] { export_name("not-a-uuid", 0); }), "vm_id");
  EXPECT_EQ(field_of([] { export_name("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", -1); }), "unit");
  EXPECT_THROW(export_name("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", 256), UsageError);
}

TEST(Names, DisplayNamesRejectSeparatorsAndControlCharacters) {
  EXPECT_NO_THROW(check_display_name("web-01 (prod)", "name"));
  EXPECT_THROW(check_display_name("a/b", "name"), UsageError);
  EXPECT_THROW(check_display_name("a\\b", "name"), UsageError);
  EXPECT_THROW(check_display_name("a\nb", "name"), UsageError);
  EXPECT_THROW(check_display_name(std::string("a\0b", 3), "name"), UsageError);
  EXPECT_THROW(check_display_name("", "name"), UsageError);
  EXPECT_THROW(check_display_name(std::string(300, 'x'), "name"), UsageError);
  EXPECT_EQ(field_of([] { check_display_name("a/b", "vms[2].name"); }), "vms[2].name");
}

TEST(Names, DiskKeysAreCanonicalDecimalNumbers) {
  EXPECT_EQ(DiskKey::parse("2000").value(), 2000);
  EXPECT_EQ(DiskKey::parse("0").str(), "0");
  EXPECT_EQ(DiskKey::parse("2147483647").value(), DiskKey::kMax);  // vcsim gives such keys
  EXPECT_EQ(DiskKey::parse("1345084660").str(), "1345084660");
  EXPECT_EQ(DiskKey(2001).str(), "2001");
  EXPECT_LT(DiskKey(2000), DiskKey(2001));
  std::map<DiskKey, int> by_key{{DiskKey(2001), 1}, {DiskKey(2000), 0}};
  EXPECT_EQ(by_key.begin()->first, DiskKey(2000));
  for (const char* bad : {"", "20x0", "-1", "02000", "2147483648", "99999999999", " 2000", "2000 "}) {
    EXPECT_FALSE(DiskKey::valid(bad)) << bad;
    EXPECT_EQ(field_of([&] { DiskKey::parse(bad, "disks[1].key"); }), "disks[1].key") << bad;
  }
  EXPECT_EQ(field_of([] { DiskKey(-1); }), "disk_key");
  EXPECT_EQ(field_of([] { DiskKey(int64_t{DiskKey::kMax} + 1); }), "disk_key");
}

// The regular expressions OpenAPI documents carry accept exactly what the code accepts.
TEST(Names, PatternsAgreeWithTheRules) {
  auto agree = [](bool (*rule)(std::string_view), const char* pattern, const std::vector<std::string>& values) {
    std::regex re(pattern);
    for (const auto& v : values) EXPECT_EQ(rule(v), std::regex_search(v, re)) << "\"" << v << "\" against " << pattern;
  };
  agree(is_uuid, kUuidPattern,
        {"4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", "4210A4C2-6b57-4d4b-9d8e-0c1f2a3b4c5d",
         "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5", "4210a4c26b574d4b9d8e0c1f2a3b4c5d0000", "",
         "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d\n", "x4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d"});
  agree([](std::string_view v) { return DiskKey::valid(v); }, kDiskKeyPattern,
        {"0", "7", "2000", "123456789", "1234567890", "1999999999", "2099999999", "2139999999", "2146999999",
         "2147399999", "2147479999", "2147482999", "2147483599", "2147483639", "2147483647", "2147483648",
         "2147483650", "2147483700", "2147484000", "2147490000", "2147500000", "2148000000", "2150000000",
         "2200000000", "3000000000", "9999999999", "10000000000", "00", "02000", "", "-1", "20a0", " 2000"});
  agree(is_mac_address, kMacPattern,
        {"00:50:56:aa:bb:cc", "00:50:56:AA:BB:CC", "00-50-56-aa-bb-cc", "00:50:56:aa:bb", "00:50:56:aa:bb:cc:dd",
         "0:50:56:aa:bb:cc", "00:50:56:aa:bb:cg", ""});
  agree(is_export_name, kExportNamePattern,
        {"migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk0",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk9",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk99",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk199",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk249",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk255",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk256",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk01",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk",
         "migration-vm-4210A4C2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk1",
         "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk1/x", "x"});
  agree(is_host, kHostPattern, {"oma.example", "10.0.0.5", "fe80::1", "::1", "", "a b", "a;b", "a/b", "a_b", "-oProxyCommand=x", "a..b",
                                    "10.0.0.256", "-v", "host-", "x.example.", "1.2.3"});
}

}  // namespace
}  // namespace mk::protocol
