// libFuzzer target: the OMA<->VMA protocol messages (protocol/messages.h) as each side
// receives them: a body's JSON text through decode_text<T>(). Input: a selector byte
// (which message type), then the body. Checks: only mk::Error (schema::FieldError)
// escapes; a message that decodes encodes again without error (a peer never receives
// what it could not send), and that encoding decodes to the same JSON (a round trip
// loses nothing).
#include "fuzz_support.h"
#include "protocol/messages.h"

namespace {

using namespace mk::protocol;

template <typename T>
void round_trip(const std::string& text) {
  T message;
  if (!mk::fuzz::expect_error([&] { message = decode_text<T>(text); })) return;
  nlohmann::json once;
  try {
    once = encode(message);
  } catch (const mk::Error& e) {
    mk::fuzz::fail(std::string("a decoded message does not encode: ") + e.what());
  }
  T again;
  try {
    again = decode<T>(once);
  } catch (const mk::Error& e) {
    mk::fuzz::fail(std::string("an encoded message does not decode: ") + e.what());
  }
  if (encode(again) != once) mk::fuzz::fail("decode(encode(m)) differs from m: " + once.dump());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  using Decoder = void (*)(const std::string&);
  static const Decoder decoders[] = {
      round_trip<ReplicateRequest>, round_trip<ReplicateAccepted>, round_trip<DiskProgress>,
      round_trip<JobProgress>,      round_trip<StopReply>,         round_trip<CleanupReply>,
      round_trip<PowerRequest>,     round_trip<PowerReply>,        round_trip<DiscoveredVm>,
      round_trip<Discovery>,        round_trip<PreflightFinding>,  round_trip<PreflightReply>,
      round_trip<Health>,           round_trip<EmptyRequest>,      round_trip<ErrorReply>,
  };
  decoders[in.selector % (sizeof decoders / sizeof decoders[0])](in.text);
  return 0;
}
