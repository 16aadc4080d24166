// Unit tests for src/common/endpoint.h: URI schemes, TLS options and PSK identities.
#include "common/endpoint.h"

#include <gtest/gtest.h>

#include "common/error.h"
#include "unit_temp_dir.h"

namespace mk {
namespace {

Endpoint endpoint(const std::string& uri, const std::string& role = "", TlsOptions tls = {}) {
  Endpoint e;
  e.uri = uri;
  e.role = role;
  e.tls = tls;
  return e;
}

TEST(UnitEndpoint, TlsFollowsTheScheme) {
  EXPECT_FALSE(endpoint("nbd://host/export").uses_tls());
  EXPECT_FALSE(endpoint("nbd+unix:///?socket=/s").uses_tls());
  EXPECT_TRUE(endpoint("nbds://host/export").uses_tls());
  EXPECT_TRUE(endpoint("nbds+unix:///?socket=/s").uses_tls());
}

TEST(UnitEndpoint, DescribeNamesTheRoleWhenThereIsOne) {
  EXPECT_EQ(endpoint("nbd://h/e", "target").describe(), "target nbd://h/e");
  EXPECT_EQ(endpoint("nbd://h/e").describe(), "nbd://h/e");
}

TEST(UnitEndpoint, UnknownSchemeIsAUsageErrorNamingTheEndpoint) {
  try {
    validate_endpoint(endpoint("http://host/export", "source"));
    FAIL() << "accepted http://";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("source http://host/export"), std::string::npos) << e.what();
  }
}

TEST(UnitEndpoint, TlsCredentialsNeedATlsScheme) {
  unit::TempDir dir;
  std::string psk = dir.file("keys.psk");
  unit::write_all(psk, "client:0123456789abcdef\n");
  EXPECT_THROW(validate_endpoint(endpoint("nbd://host/export", "target", {psk, ""})), UsageError);
  EXPECT_THROW(validate_endpoint(endpoint("nbd://host/export", "target", {"", dir.path().string()})), UsageError);
  EXPECT_NO_THROW(validate_endpoint(endpoint("nbds://host/export", "target", {psk, ""})));
}

TEST(UnitEndpoint, PskFileAndCertificatesTogetherAreRefused) {
  unit::TempDir dir;
  std::string psk = dir.file("keys.psk");
  unit::write_all(psk, "client:00\n");
  EXPECT_THROW(validate_endpoint(endpoint("nbds://host/export", "target", {psk, dir.path().string()})), UsageError);
}

TEST(UnitEndpoint, FirstPskIdentitySkipsLinesWithoutOne) {
  unit::TempDir dir;
  std::string psk = dir.file("keys.psk");
  unit::write_all(psk, "\n:nokey\nvma-1:00ff\nvma-2:ff00\n");
  EXPECT_EQ(first_psk_identity(psk), "vma-1");
}

TEST(UnitEndpoint, PskFileWithoutIdentityOrMissingIsAUsageError) {
  unit::TempDir dir;
  std::string psk = dir.file("keys.psk");
  unit::write_all(psk, "no colon here\n");
  EXPECT_THROW(first_psk_identity(psk), UsageError);
  EXPECT_THROW(first_psk_identity(dir.file("missing.psk")), UsageError);
  EXPECT_THROW(validate_endpoint(endpoint("nbds://host/export", "target", {dir.file("missing.psk"), ""})), UsageError);
}

}  // namespace
}  // namespace mk
