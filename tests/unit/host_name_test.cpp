// Host names and IP literals (common/host_name.h): what a pairing bundle or the OMA's
// configuration may name as a host, and the hostile values that must never pass.
#include "common/host_name.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mk {
namespace {

TEST(HostName, AcceptsHostNamesAndAddresses) {
  std::vector<std::string> good = {"oma", "oma.example.local", "OMA-1.Example.COM", "10.0.0.1", "127.0.0.1", "::1",
                                   "fd00::10", "2001:db8::8a2e:370:7334", "::ffff:10.0.0.1", "3com.example", "a",
                                   std::string(63, 'a') + ".example"};
  for (const std::string& h : good) {
    EXPECT_TRUE(is_host_name_or_ip(h)) << h;
  }
  EXPECT_TRUE(is_ip_literal("10.0.0.1") && is_ip_literal("::1"));
  EXPECT_FALSE(is_ip_literal("oma.example"));
}

TEST(HostName, RefusesOptionsUrisAndMistypedNames) {
  std::vector<std::string> bad = {
      "", "-oProxyCommand=touch /tmp/x", "-oProxyCommand=x", "-v", "-host", "host-", "a..b", ".host", "host.",
      "host name", "host;id", "host$(id)", "host`id`", "host/x", "host?tls-psk-file=/etc/x", "host#x", "user@host",
      "host:22", "[::1]", "fe80::1%eth0", "host_name", "10.0.0.256", "1.2.3", "10.0.0.1.", "host\n",
      std::string(64, 'a') + ".example", std::string(254, 'a'), std::string("ho\0st", 5), "hóst"};
  for (const std::string& h : bad) {
    EXPECT_FALSE(is_host_name_or_ip(h)) << h;
  }
}

}  // namespace
}  // namespace mk
