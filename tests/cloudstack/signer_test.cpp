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

TEST(Signer, KeyCaseIsKeptInTheQueryAndLowerCasedInTheSignedString) {
  Params a{{"command", "listUsers"}, {"response", "json"}, {"apiKey", kGuideApiKey}};
  EXPECT_EQ(sign(a, kGuideSecret), "TTpdDq/7j/J58XCRHomKoQXEQds=");
  // The query that is sent keeps the caller's case and sorts like the signed string.
  EXPECT_EQ(encode_query(a).substr(0, 7), "apiKey=");
}

// Vectors computed outside this code base, from the server's algorithm
// (ApiServer.verifyRequest: names sorted as received, values through Java's URLEncoder
// with "+" as %20, the joined string lower-cased, HMAC-SHA1, base64), with Python 3:
//   SAFE = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.*")
//   enc = lambda v: "".join(chr(b) if b in SAFE else "%%%02X" % b for b in v.encode())
//   s = "&".join(f"{k}={enc(v)}" for k, v in sorted(params.items())).lower()
//   base64.b64encode(hmac.new(secret.encode(), s.encode(), hashlib.sha1).digest())
// and the second checked again with `openssl dgst -sha1 -hmac SECRET -binary | base64`.
TEST(Signer, IndependentVectorsWithSpecialCharactersAndCaseSensitiveOrder) {
  Params special{{"command", "createVolume"},
                 {"apiKey", "key-1"},
                 {"response", "json"},
                 {"name", "a b+c*d~e/f#g&h(i)j \u00e9 \u00fc \u4e2d"},
                 {"signatureversion", "3"},
                 {"expires", "2030-01-01T00:00:00+0000"}};
  EXPECT_EQ(string_to_sign(special),
            "apikey=key-1&command=createvolume&expires=2030-01-01t00%3a00%3a00%2b0000&name=a%20b%2bc*d%7ee%2ff%23g%"
            "26h%28i%29j%20%c3%a9%20%c3%bc%20%e4%b8%ad&response=json&signatureversion=3");
  EXPECT_EQ(sign(special, kGuideSecret), "wUtFWc4w8XHAro8X6rpD4kKia00=");

  // "apiKey" < "api_x" as the server sorts (K is 0x4B, _ is 0x5F); lower-cased first,
  // "api_x" < "apikey", and the signature would not match.
  Params order{{"command", "deployVirtualMachine"}, {"apiKey", "key-1"}, {"api_x", "1"},
               {"displayname", "Web (prod) #1"}, {"details[0].cpuNumber", "2"},
               {"details[0].cpuSpeed", "1000"}, {"details[0].memory", "2048"}};
  EXPECT_EQ(string_to_sign(order),
            "apikey=key-1&api_x=1&command=deployvirtualmachine&details[0].cpunumber=2&details[0].cpuspeed=1000&"
            "details[0].memory=2048&displayname=web%20%28prod%29%20%231");
  EXPECT_EQ(sign(order, kGuideSecret), "6WCZomExlR6syxtNsowvLf34ei8=");
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
