// Signed OMA->VMA calls (src/protocol/request_auth.h): a request verifies only with its
// token, method, path, body and a time within the allowed clock skew; any field changed
// fails; nonces are single-use; answers verify only for their request's nonce, status
// and body; the header never contains the token.
#include "protocol/request_auth.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mk::protocol {
namespace {

const std::string kToken = "mko_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
constexpr int64_t kNow = 1'800'000'000;

TEST(RequestAuth, ASignedRequestVerifiesAndItsBodyMatches) {
  std::string nonce = new_nonce();
  std::string h = sign_request(kToken, "POST", "/api/v1/replicate", R"({"a":1})", kNow, nonce);
  EXPECT_EQ(h.find(kToken), std::string::npos);
  EXPECT_TRUE(h.starts_with("MK-HMAC-SHA256 t=1800000000,n=" + nonce + ",b=")) << h;
  auto c = check_request(kToken, "POST", "/api/v1/replicate", h, kNow + 10);
  ASSERT_TRUE(c.request) << c.refusal;
  EXPECT_EQ(c.request->nonce, nonce);
  EXPECT_EQ(c.request->time, kNow);
  EXPECT_TRUE(body_matches(*c.request, R"({"a":1})"));
  EXPECT_FALSE(body_matches(*c.request, R"({"a":2})"));
}

TEST(RequestAuth, AnyChangeOrAnotherTokenIsRefused) {
  std::string h = sign_request(kToken, "POST", "/api/v1/stop/x", "{}", kNow, new_nonce());
  EXPECT_FALSE(check_request(kToken + "x", "POST", "/api/v1/stop/x", h, kNow).request);
  EXPECT_FALSE(check_request(kToken, "GET", "/api/v1/stop/x", h, kNow).request);
  EXPECT_FALSE(check_request(kToken, "POST", "/api/v1/stop/y", h, kNow).request);
  // A field of the header changed: time, nonce, body digest or the MAC itself.
  for (const char* field : {"t=", "n=", "b=", "m="}) {
    std::string bad = h;
    size_t at = bad.find(field) + 2;
    bad[at] = bad[at] == '1' ? '2' : '1';
    auto c = check_request(kToken, "POST", "/api/v1/stop/x", bad, kNow);
    EXPECT_FALSE(c.request) << field;
    EXPECT_FALSE(c.refusal.empty());
  }
}

TEST(RequestAuth, BearerAndMalformedHeadersAreRefusedSayingWhy) {
  auto bearer = check_request(kToken, "GET", "/api/v1/health", "Bearer " + kToken, kNow);
  EXPECT_FALSE(bearer.request);
  EXPECT_NE(bearer.refusal.find("not signed"), std::string::npos) << bearer.refusal;
  for (const std::string& h : std::vector<std::string>{"", "MK-HMAC-SHA256 ", "MK-HMAC-SHA256 t=1,n=2,b=3,m=4", "MK-HMAC-SHA256 n=1,t=2,b=3,m=4",
                        "MK-HMAC-SHA256 t=-5,n=00000000000000000000000000000000,b=" + std::string(64, '0') +
                            ",m=" + std::string(64, '0'),
                        "MK-HMAC-SHA256 t=1,n=00000000000000000000000000000000,b=" + std::string(64, '0') +
                            ",m=" + std::string(64, '0') + ",x=1"}) {
    auto c = check_request(kToken, "GET", "/api/v1/health", h, kNow);
    EXPECT_FALSE(c.request) << h;
    EXPECT_FALSE(c.refusal.empty()) << h;
  }
}

TEST(RequestAuth, ATimeBeyondTheClockSkewIsRefusedNamingTheClocks) {
  for (int64_t off : {-kMaxClockSkewSeconds - 1, kMaxClockSkewSeconds + 1}) {
    std::string h = sign_request(kToken, "GET", "/api/v1/health", "", kNow + off, new_nonce());
    auto c = check_request(kToken, "GET", "/api/v1/health", h, kNow);
    EXPECT_FALSE(c.request);
    EXPECT_NE(c.refusal.find("clock"), std::string::npos) << c.refusal;
  }
  std::string edge = sign_request(kToken, "GET", "/api/v1/health", "", kNow - kMaxClockSkewSeconds, new_nonce());
  EXPECT_TRUE(check_request(kToken, "GET", "/api/v1/health", edge, kNow).request);
}

TEST(RequestAuth, NoncesAreSingleUseWithinTheWindowAndForgottenAfterIt) {
  NonceCache cache;
  std::string a = new_nonce(), b = new_nonce();
  EXPECT_NE(a, b);
  EXPECT_TRUE(cache.first_use(a, kNow, kNow));
  EXPECT_FALSE(cache.first_use(a, kNow, kNow + 1));
  EXPECT_TRUE(cache.first_use(b, kNow, kNow + 1));
  // Long after, the old nonce is forgotten: its request time would be refused anyway.
  EXPECT_TRUE(cache.first_use(a, kNow + 3 * kMaxClockSkewSeconds, kNow + 3 * kMaxClockSkewSeconds));
}

TEST(RequestAuth, AnAnswerVerifiesOnlyForItsNonceStatusAndBody) {
  std::string n = new_nonce();
  std::string mac = sign_answer(kToken, n, 200, "{}");
  EXPECT_TRUE(answer_is_signed(kToken, n, 200, "{}", mac));
  EXPECT_FALSE(answer_is_signed(kToken, new_nonce(), 200, "{}", mac));
  EXPECT_FALSE(answer_is_signed(kToken, n, 404, "{}", mac));
  EXPECT_FALSE(answer_is_signed(kToken, n, 200, "{ }", mac));
  EXPECT_FALSE(answer_is_signed(kToken + "x", n, 200, "{}", mac));
  EXPECT_FALSE(answer_is_signed(kToken, n, 200, "{}", ""));
}

}  // namespace
}  // namespace mk::protocol
