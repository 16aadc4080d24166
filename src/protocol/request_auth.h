// Signed calls between the OMA and a VMA.
//
// The OMA reaches a VMA at a loopback port that the OMA's sshd binds for the VMA's
// reverse tunnel. While that tunnel is down, any local process on the OMA could bind the
// port and wait for a call, so the VMA's API token never travels: every request carries
// an HMAC-SHA256, keyed with the token, of its method, path, time, a fresh nonce and the
// SHA-256 of its body; the VMA checks it (and refuses a nonce it has seen, or a time too
// far from its own clock), and signs its answer with the request's nonce, its status and
// the SHA-256 of its body. The OMA accepts only an answer signed that way. So a process
// that is not the VMA learns nothing it can replay and cannot forge an answer.
//
// Header formats (all hex lowercase):
//   Authorization: MK-HMAC-SHA256 t=<unix seconds>,n=<32 hex nonce>,b=<body sha256>,m=<mac>
//     mac = HMAC(token, "mk-request\n" METHOD "\n" PATH "\n" t "\n" n "\n" b)
//   MigrateKit-Answer-Mac: <mac>
//     mac = HMAC(token, "mk-answer\n" n "\n" STATUS "\n" sha256(body))
//
// Free functions and NonceCache; NonceCache is thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>

namespace mk::protocol {

inline constexpr const char* kAuthScheme = "MK-HMAC-SHA256";
inline constexpr const char* kAnswerMacHeader = "MigrateKit-Answer-Mac";
// How far the two appliances' clocks may differ.
inline constexpr int64_t kMaxClockSkewSeconds = 300;

// A new random nonce (128 bits, hex).
std::string new_nonce();

// The Authorization header value for a request.
std::string sign_request(const std::string& token, const std::string& method, const std::string& path,
                         const std::string& body, int64_t unix_seconds, const std::string& nonce);

// What a signed request's header says, once its MAC is checked.
struct SignedRequest {
  int64_t time = 0;
  std::string nonce;
  std::string body_sha256;
};

// Checks an Authorization header against the method and path (the body is checked when
// it has arrived: body_matches). Returns the request's fields, or the reason it is
// refused, for the 401 answer (never a secret).
struct RequestCheck {
  std::optional<SignedRequest> request;
  std::string refusal;
};
RequestCheck check_request(const std::string& token, const std::string& method, const std::string& path,
                           const std::string& authorization, int64_t now_unix_seconds);
bool body_matches(const SignedRequest& request, const std::string& body);

std::string sign_answer(const std::string& token, const std::string& nonce, int status, const std::string& body);
bool answer_is_signed(const std::string& token, const std::string& nonce, int status, const std::string& body,
                      const std::string& mac);

// The nonces of the requests accepted in the last 2 × kMaxClockSkewSeconds: a request
// whose nonce is here is a replay. Older nonces are forgotten (their time is refused).
class NonceCache {
 public:
  // False if `nonce` was seen already; remembers it otherwise.
  bool first_use(const std::string& nonce, int64_t request_time, int64_t now_unix_seconds);

 private:
  std::mutex mu_;
  std::multimap<int64_t, std::string> by_time_;
  std::map<std::string, int64_t> seen_;
};

}  // namespace mk::protocol
