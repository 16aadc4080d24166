// The kept export server's record (DATA/export-server.json) as the OMA reads it back:
// only a PID that names one process, a real port and a command line are accepted.
// Regression tests for inputs the oma_config fuzz target (fuzz/oma_config.cpp) found.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "oma/exports/nbdkit_server.h"

namespace mk::oma {
namespace {

TEST(KeptServerRecord, AWellFormedRecordIsRead) {
  auto r = parse_kept_server_record(R"({"pid":4242,"port":10809,"argv":["nbdkit","-f","dir=/x y"]})");
  EXPECT_EQ(r.pid, 4242);
  EXPECT_EQ(r.port, 10809);
  EXPECT_EQ(r.argv, (std::vector<std::string>{"nbdkit", "-f", "dir=/x y"}));
}

// kill(-1, SIGTERM) signals every process the OMA may signal; kill(0, ...) its own
// process group. Such a record was accepted and `oma --stop-export-server` signalled it.
TEST(KeptServerRecord, APidThatIsNotOneOtherProcessIsRefused) {
  for (const char* pid : {"-1", "0", "1", "-4242", "2147483648", "99999999999999999999"}) {
    EXPECT_THROW(parse_kept_server_record(fmt::format(R"({{"pid":{},"port":10809,"argv":["nbdkit"]}})", pid)), Error)
        << pid;
  }
}

// A float outside int's range was converted to pid_t: undefined behaviour (UBSan).
TEST(KeptServerRecord, NumbersThatAreNotIntegersAreRefused) {
  EXPECT_THROW(parse_kept_server_record(R"({"pid":1e300,"port":10809,"argv":["nbdkit"]})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"({"pid":4242,"port":1e10,"argv":["nbdkit"]})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"({"pid":"4242","port":10809,"argv":["nbdkit"]})"), Error);
}

TEST(KeptServerRecord, PortAndCommandLineMustBeReal) {
  EXPECT_THROW(parse_kept_server_record(R"({"pid":4242,"port":0,"argv":["nbdkit"]})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"({"pid":4242,"port":65536,"argv":["nbdkit"]})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"({"pid":4242,"port":10809,"argv":[]})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"({"pid":4242,"port":10809,"argv":[1]})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"({"pid":4242,"port":10809})"), Error);
  EXPECT_THROW(parse_kept_server_record(R"([4242,10809])"), Error);
  EXPECT_THROW(parse_kept_server_record("{"), Error);
}

}  // namespace
}  // namespace mk::oma
