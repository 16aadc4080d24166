// libFuzzer target: the pairing bundle `vma pair` reads and the enrolment messages
// (protocol/enrolment.h), and the ed25519 public key check that guards authorized_keys.
// Input: a selector byte (which document), then its text. Checks: only mk::Error
// escapes; what decodes encodes again and decodes to the same JSON; a normalised key is
// one "ssh-ed25519 <68 base64 characters>" line that normalises to itself.
#include "fuzz_support.h"
#include "protocol/enrolment.h"

namespace {

using namespace mk::protocol;

template <typename T>
void round_trip(const std::string& text) {
  T message;
  if (!mk::fuzz::expect_error([&] { message = decode_text<T>(text, "bundle"); })) return;
  nlohmann::json once;
  try {
    once = encode(message);
    if (encode(decode<T>(once)) != once) mk::fuzz::fail("decode(encode(m)) differs from m: " + once.dump());
  } catch (const mk::Error& e) {
    mk::fuzz::fail(std::string("a decoded document does not encode and decode again: ") + e.what());
  }
}

void public_key(const std::string& text) {
  std::string key;
  if (!mk::fuzz::expect_error([&] { key = normalize_ed25519_public_key(text); })) return;
  if (key.size() != 12 + 68 || !key.starts_with("ssh-ed25519 ")) mk::fuzz::fail("not a normalised key: " + key);
  for (char c : key.substr(12)) {
    bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/' ||
               c == '=';
    if (!b64) mk::fuzz::fail("a normalised key holds a character outside base64: " + key);
  }
  if (normalize_ed25519_public_key(key) != key) mk::fuzz::fail("normalising a normalised key changed it");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  using Reader = void (*)(const std::string&);
  static const Reader readers[] = {round_trip<PairingBundle>, round_trip<EnrolRequest>, round_trip<EnrolReply>,
                                   public_key};
  readers[in.selector % (sizeof readers / sizeof readers[0])](in.text);
  return 0;
}
