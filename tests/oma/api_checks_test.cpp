// The API's input checks and the regular expressions the OpenAPI document gives for them
// (api/checks.h) accept and refuse the same values, so that a validator built from the
// document agrees with the OMA.
#include "oma/api/checks.h"

#include <gtest/gtest.h>

#include <regex>

namespace mk::oma::api {
namespace {

using Check = void (*)(const std::string&, const std::string&);

bool accepts(Check check, const std::string& v) {
  try {
    check(v, "field");
    return true;
  } catch (const FieldError&) {
    return false;
  }
}

void expect_agree(Check check, const char* pattern, const std::vector<std::string>& values) {
  std::regex re(pattern);
  for (const auto& v : values) {
    SCOPED_TRACE("value \"" + v + "\" against " + pattern);
    EXPECT_EQ(accepts(check, v), std::regex_search(v, re));
  }
}

TEST(ApiChecks, PatternsAgreeWithTheChecks) {
  expect_agree(uuid_check, kUuidPattern,
               {"4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", "4210A4C2-6b57-4d4b-9d8e-0c1f2a3b4c5d",
                "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5", "4210a4c26b574d4b9d8e0c1f2a3b4c5d0000", "",
                "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d\n", "x4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d"});
  expect_agree(disk_key_check, kDiskKeyPattern, {"2000", "0", "123456789", "1234567890", "", "20a0", "-1", " 2000"});
  expect_agree(mac_check, kMacPattern,
               {"00:50:56:aa:bb:cc", "00:50:56:AA:BB:CC", "00-50-56-aa-bb-cc", "00:50:56:aa:bb", "00:50:56:aa:bb:cc:dd",
                "0:50:56:aa:bb:cc", "00:50:56:aa:bb:cg", ""});
  expect_agree(id_check, kCloudStackIdPattern,
               {"8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e", "net-1", "ABC123", "", "a b", "a/b", "a_b"});
  expect_agree(url_check, kUrlPattern,
               {"https://cloud.example:8080/client/api", "http://x", "ftp://x", "cloud.example", "", "HTTPS://x"});
}

}  // namespace
}  // namespace mk::oma::api
