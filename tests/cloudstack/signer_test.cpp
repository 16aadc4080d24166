// Signing: the worked example of CloudStack's developer guide, and the encoding rules.
#include "cloudstack/signer.h"

#include <gtest/gtest.h>

namespace mk::cloudstack {
namespace {

// The developer guide's example: listUsers with response=json for this API key and
// secret key is signed "TTpdDq/7j/J58XCRHomKoQXEQds=".
const char* kGuideApiKey =
    "plgWJfZK4gyS3mOMTVmjUVg-X-jlWlnfaUJ9GAbBbf9EdM-kAYMmAiLqzzq1ElZLYq_u38zCm0bewzGUdP66mg";
const char* kGuideSecret =
    "VDaACYb0LV9eNjTetIOElcVQkvJck_J_QljX_FcHRj87ZKiy0z0ty0ZsYBkoXkY9b7eq1EhwJaw7FF3akA3KBQ";

TEST(Signer, DeveloperGuideExample) {
  Params p{{"command", "listUsers"}, {"response", "json"}, {"apikey", kGuideApiKey}};
  EXPECT_EQ(string_to_sign(p),
            "apikey=plgwjfzk4gys3momtvmjuvg-x-jlwlnfauj9gabbbf9edm-kaymmailqzzq1elzlyq_"
            "u38zcm0bewzgudp66mg&command=listusers&response=json");
  EXPECT_EQ(sign(p, kGuideSecret), "TTpdDq/7j/J58XCRHomKoQXEQds=");
  // The signature goes into the URL encoded.
  EXPECT_EQ(url_encode(sign(p, kGuideSecret)), "TTpdDq%2F7j%2FJ58XCRHomKoQXEQds%3D");
}

TEST(Signer, KeyCaseDoesNotChangeOrderOrSignature) {
  Params a{{"command", "listUsers"}, {"response", "json"}, {"apiKey", kGuideApiKey}};
  EXPECT_EQ(sign(a, kGuideSecret), "TTpdDq/7j/J58XCRHomKoQXEQds=");
  // The query that is sent keeps the caller's case and sorts like the signed string.
  EXPECT_EQ(encode_query(a).substr(0, 7), "apiKey=");
}

TEST(Signer, SpacesAreEncodedAsPercent20AndReservedCharactersEscaped) {
  EXPECT_EQ(url_encode("a b+c/d=e&f"), "a%20b%2Bc%2Fd%3De%26f");
  // What the server's Java URLEncoder keeps and escapes ("~" is escaped, "*" is kept).
  EXPECT_EQ(url_encode("Az09-_.*~"), "Az09-_.*%7E");
  EXPECT_EQ(url_encode("é"), "%C3%A9");
  Params p{{"name", "My VM"}, {"command", "deployVirtualMachine"}};
  EXPECT_EQ(string_to_sign(p), "command=deployvirtualmachine&name=my%20vm");
}

TEST(Signer, IndexedParametersSortAsCloudStackDoes) {
  Params p{{"tags[0].value", "x"}, {"tags[0].key", "k"}, {"command", "createTags"}};
  // Keys are sent as they are; only values are encoded.
  EXPECT_EQ(string_to_sign(p), "command=createtags&tags[0].key=k&tags[0].value=x");
}

TEST(Signer, DifferentSecretsGiveDifferentSignatures) {
  Params p{{"command", "listZones"}, {"apikey", "k"}};
  EXPECT_NE(sign(p, "secret-one"), sign(p, "secret-two"));
  // RFC 2202 test case 2 for HMAC-SHA1, base64 of effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
  EXPECT_EQ(hmac_sha1_base64("Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk=");
}

}  // namespace
}  // namespace mk::cloudstack
