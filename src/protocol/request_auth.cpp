#include "protocol/request_auth.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>

#include "common/digest.h"
#include "common/error.h"

namespace mk::protocol {
namespace {

std::string hmac_hex(const std::string& key, const std::string& text) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(text.data()),
            text.size(), md, &len)) {
    throw Error("HMAC-SHA256 failed");
  }
  return hex_lower(md, len);
}

bool equal_constant_time(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string request_mac(const std::string& token, const std::string& method, const std::string& path, int64_t t,
                        const std::string& nonce, const std::string& body_sha256) {
  return hmac_hex(token, fmt::format("mk-request\n{}\n{}\n{}\n{}\n{}", method, path, t, nonce, body_sha256));
}

bool is_hex(const std::string& s, size_t length) {
  return s.size() == length && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

// "t=...,n=...,b=...,m=..." into its four fields, in this order; nullopt if malformed.
std::optional<std::map<std::string, std::string>> fields_of(const std::string& params) {
  std::map<std::string, std::string> out;
  size_t at = 0;
  for (const char* name : {"t", "n", "b", "m"}) {
    std::string prefix = std::string(name) + "=";
    if (params.compare(at, prefix.size(), prefix) != 0) return std::nullopt;
    size_t end = params.find(',', at);
    out[name] = params.substr(at + prefix.size(), end == std::string::npos ? std::string::npos : end - at - prefix.size());
    at = end == std::string::npos ? params.size() : end + 1;
  }
  if (at != params.size()) return std::nullopt;
  return out;
}

}  // namespace

std::string new_nonce() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) throw Error("cannot make a request nonce: the random generator failed");
  return hex_lower(b, sizeof b);
}

std::string sign_request(const std::string& token, const std::string& method, const std::string& path,
                         const std::string& body, int64_t unix_seconds, const std::string& nonce) {
  std::string b = sha256_hex(body);
  return fmt::format("{} t={},n={},b={},m={}", kAuthScheme, unix_seconds, nonce, b,
                     request_mac(token, method, path, unix_seconds, nonce, b));
}

RequestCheck check_request(const std::string& token, const std::string& method, const std::string& path,
                           const std::string& authorization, int64_t now) {
  const std::string scheme = std::string(kAuthScheme) + " ";
  if (!authorization.starts_with(scheme)) {
    return {std::nullopt, fmt::format("the request is not signed: this VMA takes only {} requests signed with the "
                                      "token the OMA issued at pairing (protocol 3 or later)",
                                      kAuthScheme)};
  }
  auto f = fields_of(authorization.substr(scheme.size()));
  if (!f || !is_hex((*f)["n"], 32) || !is_hex((*f)["b"], 64) || !is_hex((*f)["m"], 64) || (*f)["t"].empty() ||
      (*f)["t"].size() > 12 || (*f)["t"].find_first_not_of("0123456789") != std::string::npos) {
    return {std::nullopt, "malformed signature header (expected t=,n=,b=,m=)"};
  }
  int64_t t = std::strtoll((*f)["t"].c_str(), nullptr, 10);
  if (!equal_constant_time(request_mac(token, method, path, t, (*f)["n"], (*f)["b"]), (*f)["m"])) {
    return {std::nullopt, "wrong signature: the request was not signed with this VMA's token"};
  }
  if (std::llabs(now - t) > kMaxClockSkewSeconds) {
    return {std::nullopt, fmt::format("the request's time is {} s from this VMA's clock (at most {} s): set both "
                                      "appliances' clocks (NTP)",
                                      t - now, kMaxClockSkewSeconds)};
  }
  return {SignedRequest{t, (*f)["n"], (*f)["b"]}, ""};
}

bool body_matches(const SignedRequest& request, const std::string& body) {
  return equal_constant_time(sha256_hex(body), request.body_sha256);
}

std::string sign_answer(const std::string& token, const std::string& nonce, int status, const std::string& body) {
  return hmac_hex(token, fmt::format("mk-answer\n{}\n{}\n{}", nonce, status, sha256_hex(body)));
}

bool answer_is_signed(const std::string& token, const std::string& nonce, int status, const std::string& body,
                      const std::string& mac) {
  return equal_constant_time(sign_answer(token, nonce, status, body), mac);
}

bool NonceCache::first_use(const std::string& nonce, int64_t request_time, int64_t now) {
  std::lock_guard lock(mu_);
  // Forget what a replay could no longer use: its time would be refused.
  while (!by_time_.empty() && by_time_.begin()->first < now - 2 * kMaxClockSkewSeconds) {
    seen_.erase(by_time_.begin()->second);
    by_time_.erase(by_time_.begin());
  }
  if (!seen_.emplace(nonce, request_time).second) return false;
  by_time_.emplace(request_time, nonce);
  return true;
}

}  // namespace mk::protocol
