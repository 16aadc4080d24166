// Every enum the protocol carries: one table each (common/enum_names.h), round trips,
// refusals naming the field, JSON by name.
#include "protocol/enums.h"

#include <gtest/gtest.h>

#include <set>

#include "common/json_schema.h"

namespace mk::protocol {
namespace {

// Every word maps back to its value, and no two values share a word.
template <typename E>
void expect_round_trips(std::initializer_list<E> all) {
  std::set<std::string_view> words;
  for (E e : all) {
    std::string_view w = enum_name(e);  // throws for a value without a name
    EXPECT_TRUE(words.insert(w).second) << w;
    EXPECT_EQ(parse_field<E>(w, "f"), e) << w;
  }
  EXPECT_EQ(enum_names<E>().size(), all.size());
}

TEST(Enums, EveryValueRoundTrips) {
  expect_round_trips({PassKind::Full, PassKind::Incremental});
  expect_round_trips({DiskStatus::Pending, DiskStatus::Copying, DiskStatus::Completed, DiskStatus::Failed});
  expect_round_trips({DiskPhase::Pending, DiskPhase::Planning, DiskPhase::Copying, DiskPhase::Verifying,
                      DiskPhase::Done, DiskPhase::Failed});
  expect_round_trips({VmaJobStatus::Queued, VmaJobStatus::Running, VmaJobStatus::Completed, VmaJobStatus::Failed,
                      VmaJobStatus::Stopped});
  expect_round_trips({PowerAction::Shutdown, PowerAction::Off, PowerAction::On});
  expect_round_trips({PowerState::PoweredOn, PowerState::PoweredOff, PowerState::Suspended});
  expect_round_trips({TunnelState::Up, TunnelState::Connecting, TunnelState::Down});
  expect_round_trips({HealthStatus::Ok, HealthStatus::Degraded});
  expect_round_trips({NbdTls::Psk, NbdTls::X509});
}

TEST(Enums, TheWireWordsAreTheDocumentedOnes) {
  EXPECT_EQ(enum_name(PassKind::Incremental), "incremental");
  EXPECT_EQ(enum_name(PowerState::PoweredOff), "poweredOff");
  EXPECT_EQ(enum_name(VmaJobStatus::Stopped), "stopped");
  EXPECT_EQ(enum_names<TunnelState>(), (std::vector<std::string>{"up", "connecting", "down"}));
}

TEST(Enums, JsonCarriesTheWord) {
  EXPECT_EQ(nlohmann::json(PowerState::PoweredOn), "poweredOn");
  EXPECT_EQ(nlohmann::json("x509").get<NbdTls>(), NbdTls::X509);
  EXPECT_THROW(nlohmann::json("X509").get<NbdTls>(), Error);
}

TEST(Enums, AnUnknownWordIsRefusedNamingTheFieldAndTheWordsAllowed) {
  EXPECT_FALSE(find_enum<DiskStatus>("done"));
  EXPECT_FALSE(find_enum<PassKind>("Full"));  // case matters on the wire
  try {
    parse_field<PowerAction>("reboot\n", "action");
    FAIL();
  } catch (const schema::FieldError& e) {
    EXPECT_EQ(e.field(), "action");
    std::string m = e.what();
    EXPECT_NE(m.find("'reboot?' is not a power action"), std::string::npos) << m;  // control character shown as ?
    EXPECT_NE(m.find("(known: shutdown, off, on)"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace mk::protocol
