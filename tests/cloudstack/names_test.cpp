// VM names: CloudStack's host-name rule (RFC 1123 label) applied to VMware names.
#include "cloudstack/names.h"

#include <gtest/gtest.h>

namespace mk::cloudstack {
namespace {

const char* kUuid = "50123456-aaaa-bbbb-cccc-1234567890ab";

TEST(Names, HostNameRule) {
  EXPECT_TRUE(is_host_name("web01"));
  EXPECT_TRUE(is_host_name("Web-01"));
  EXPECT_TRUE(is_host_name(std::string(63, 'a')));
  EXPECT_FALSE(is_host_name(std::string(64, 'a')));
  EXPECT_FALSE(is_host_name(""));
  EXPECT_FALSE(is_host_name("1web"));
  EXPECT_FALSE(is_host_name("-web"));
  EXPECT_FALSE(is_host_name("web-"));
  EXPECT_FALSE(is_host_name("web_01"));
  EXPECT_FALSE(is_host_name("web 01"));
  EXPECT_FALSE(is_host_name("w\xc3\xa9" "b"));
}

TEST(Names, VmwareNamesBecomeValidHostNames) {
  EXPECT_EQ(host_name_for("web01", kUuid), "web01");
  EXPECT_EQ(host_name_for("Web Server (prod) #1", kUuid), "Web-Server-prod-1");
  EXPECT_EQ(host_name_for("db_01.example.com", kUuid), "db-01-example-com");
  EXPECT_EQ(host_name_for("1c-api", kUuid), "vm-1c-api");
  EXPECT_EQ(host_name_for("--x--", kUuid), "x");
  EXPECT_EQ(host_name_for("caf\xc3\xa9 serveur", kUuid), "caf-serveur");
  EXPECT_EQ(host_name_for("(((", kUuid), "vm-50123456");
  EXPECT_EQ(host_name_for("", kUuid), "vm-50123456");
  std::string longer = host_name_for(std::string(40, 'a') + " " + std::string(40, 'b'), kUuid);
  EXPECT_EQ(longer.size(), 63u);
  EXPECT_TRUE(is_host_name(longer));
  // A cut that ends on a hyphen drops it.
  EXPECT_EQ(host_name_for(std::string(62, 'a') + " b", kUuid), std::string(62, 'a'));
  for (const char* name : {"a", "Z9", "x y z", "__", "9", "a-b-c", "\xe4\xb8\xad\xe6\x96\x87"}) {
    EXPECT_TRUE(is_host_name(host_name_for(name, kUuid))) << name;
  }
}

TEST(Names, DisambiguatedNamesStayValid) {
  EXPECT_EQ(disambiguated_host_name("web01", kUuid), "web01-501234");
  std::string n = disambiguated_host_name(std::string(63, 'a'), kUuid);
  EXPECT_EQ(n.size(), 63u);
  EXPECT_TRUE(is_host_name(n));
  EXPECT_TRUE(n.ends_with("-501234"));
}

TEST(Names, TestFailoverNamesStayWithin63Characters) {
  EXPECT_EQ(test_vm_host_name("web01", kUuid, 1700000000), "web01-test-20231114221320");
  std::string n = test_vm_host_name(std::string(70, 'x') + " (prod)", kUuid, 1700000000);
  EXPECT_EQ(n.size(), 63u);
  EXPECT_TRUE(is_host_name(n));
  EXPECT_TRUE(n.ends_with("-test-20231114221320"));
  EXPECT_TRUE(is_host_name(test_vm_host_name("2024 db", kUuid, 1700000000)));
}

}  // namespace
}  // namespace mk::cloudstack
