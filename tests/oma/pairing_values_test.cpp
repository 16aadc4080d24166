// What the OMA puts in pairing bundles is checked when it starts: the hosts and the SSH
// user a VMA hands to ssh and to its NBD client (the real `oma` binary refuses hostile
// values with a usage error naming the option, before it writes anything).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

TEST(PairingValues, TheOmaRefusesHostsAndUsersAVmaCouldReadAsOptions) {
  mk::test::TempDir dir("mk-oma-pairing-values");
  struct Case {
    std::string option, value;
  };
  for (const Case& c : {Case{"--ssh-host", "-oProxyCommand=touch " + dir.file("pwned")},
                        Case{"--ssh-host", "oma..example"}, Case{"--nbd-advertise-host", "-v"},
                        Case{"--nbd-advertise-host", "oma/x?tls-psk-file=/etc/shadow"},
                        Case{"--ssh-user", "-oProxyCommand=x"}}) {
    SCOPED_TRACE(c.option + " " + c.value);
    std::string data = dir.file("data"), out, err = dir.file("err");
    int rc = run_capture({OMA_BIN, "--data-dir", data, "--api-listen", "127.0.0.1", "--api-port", "0",
                          "--nbd-listen", "127.0.0.1", "--nbd-port", "0", "--gui-port", "-1", c.option, c.value},
                         out, err);
    std::ifstream in(err);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(rc, 2) << text.str();
    EXPECT_NE(text.str().find(c.option + " '"), std::string::npos) << text.str();
    EXPECT_FALSE(std::filesystem::exists(data));  // refused before anything is written
  }
  EXPECT_FALSE(std::filesystem::exists(dir.file("pwned")));
}

}  // namespace
}  // namespace mk::oma
