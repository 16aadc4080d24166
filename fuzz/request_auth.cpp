// libFuzzer target: the signed calls between the OMA and a VMA (protocol/request_auth.h):
// the VMA reading a request's Authorization header, the OMA reading an answer's MAC.
// Input: a selector byte (0: Authorization header, 1: answer MAC), then the text. The
// token and the clock are fixed, so the committed seeds (valid headers) stay valid.
// Checks: nothing throws (a refusal is a reason, not an exception); a refused header
// gives a reason; an accepted one has a 32-hex nonce, a 64-hex body digest and a time
// within the allowed skew; a MAC is accepted only if it is the one signing gives.
#include <fmt/format.h>

#include <algorithm>

#include "fuzz_support.h"
#include "protocol/request_auth.h"

namespace {

using namespace mk::protocol;

const std::string kToken = "fuzz-token-0123456789abcdef";
constexpr int64_t kNow = 1764673200;

bool is_hex(const std::string& s, size_t size) {
  return s.size() == size && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

void request_header(const std::string& text) {
  RequestCheck c = check_request(kToken, "POST", "/api/v1/replicate", text, kNow);
  if (!c.request) {
    if (c.refusal.empty()) mk::fuzz::fail("a refused header without a reason");
    return;
  }
  const SignedRequest& r = *c.request;
  if (!is_hex(r.nonce, 32)) mk::fuzz::fail("accepted nonce is not 32 hex: " + r.nonce);
  if (!is_hex(r.body_sha256, 64)) mk::fuzz::fail("accepted body digest is not 64 hex: " + r.body_sha256);
  if (std::abs(r.time - kNow) > kMaxClockSkewSeconds) mk::fuzz::fail(fmt::format("accepted time {}", r.time));
}

void answer_mac(const std::string& text) {
  const std::string nonce = "00112233445566778899aabbccddeeff";
  bool accepted = answer_is_signed(kToken, nonce, 200, "{}", text);
  if (accepted && text != sign_answer(kToken, nonce, 200, "{}")) mk::fuzz::fail("another MAC was accepted: " + text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  if (in.selector % 2 == 0) {
    request_header(in.text);
  } else {
    answer_mac(in.text);
  }
  return 0;
}
