// Every enum the protocol carries: one table each, round trips, refusals naming the field.
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
    std::string_view w = to_string(e);
    EXPECT_NE(w, "?");
    EXPECT_TRUE(words.insert(w).second) << w;
    EXPECT_EQ(from_string<E>(w, "f"), e) << w;
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
  EXPECT_EQ(to_string(PassKind::Incremental), "incremental");
  EXPECT_EQ(to_string(PowerState::PoweredOff), "poweredOff");
  EXPECT_EQ(to_string(VmaJobStatus::Stopped), "stopped");
  EXPECT_EQ(enum_names<TunnelState>(), (std::vector<std::string>{"up", "connecting", "down"}));
}

TEST(Enums, AnUnknownWordIsRefusedNamingTheFieldAndTheWordsAllowed) {
  EXPECT_FALSE(try_from_string<DiskStatus>("done"));
  EXPECT_FALSE(try_from_string<PassKind>("Full"));  // case matters on the wire
  try {
    from_string<PowerAction>("reboot\n", "action");
    FAIL();
  } catch (const schema::FieldError& e) {
    EXPECT_EQ(e.field(), "action");
    std::string m = e.what();
    EXPECT_NE(m.find("unknown power action \"reboot?\""), std::string::npos) << m;
    EXPECT_NE(m.find("\"shutdown\", \"off\", \"on\""), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace mk::protocol
