// Settings: the secret is stored sealed (the OMA's SecretBox) and validate_settings()
// reports every problem at once against the simulator.
#include "cloudstack/settings.h"

#include <gtest/gtest.h>

#include <map>

#include "oma/crypto.h"
#include "sim_server.h"
#include "support/temp_dir.h"

namespace mk::cloudstack {
namespace {

using test::SimServer;
namespace seed = test::seed;

Settings good_settings(const SimServer& sim) {
  Endpoint e = sim.endpoint();
  Settings s;
  s.api_url = e.api_url;
  s.api_key = e.api_key;
  s.secret_key = e.secret_key;
  s.zone_id = seed::zone;
  s.disk_offering_id = seed::custom_disk_offering;
  s.service_offering_id = seed::custom_service_offering;
  s.template_id = seed::ready_template;
  s.network_ids = {seed::prod_network, seed::test_network};
  s.oma_mac = "02:00:00:00:0A:01";  // case differs from CloudStack's: still the OMA
  return s;
}

std::string all(const ValidationReport& r) {
  std::string out;
  for (const auto& p : r.problems) out += p + "\n";
  return out;
}

TEST(Settings, SecretIsStoredSealedAndReadBack) {
  mk::test::TempDir dir("mk-cs-settings");
  oma::SecretBox box(dir.file("secrets.key"));
  Settings s;
  s.api_url = "https://cloud.example/client/api";
  s.api_key = "key";
  s.secret_key = "very-secret-value";
  s.network_ids = {"n1", "n2"};
  Json stored = settings_to_json(s, [&](const std::string& v) { return box.seal(v, "settings/cloudstack.secret_key_sealed"); });
  EXPECT_EQ(stored.dump().find("very-secret-value"), std::string::npos) << stored.dump();
  Settings back =
      settings_from_json(stored, [&](const std::string& v) { return box.open(v, "settings/cloudstack.secret_key_sealed"); });
  EXPECT_EQ(back.secret_key, "very-secret-value");
  EXPECT_EQ(back.network_ids, s.network_ids);
  // Another key cannot open it.
  oma::SecretBox other(dir.file("other.key"));
  EXPECT_THROW(settings_from_json(stored, [&](const std::string& v) { return other.open(v, "settings/cloudstack.secret_key_sealed"); }),
               Error);
}

TEST(Settings, GoodSettingsValidateAndFindTheOmaVm) {
  SimServer sim;
  ValidationReport r = validate_settings(good_settings(sim), SimServer::fast_client_options());
  EXPECT_TRUE(r.ok()) << all(r);
  EXPECT_EQ(r.oma_vm_id, sim.oma_vm_id());
}

TEST(Settings, EveryProblemIsReportedAtOnce) {
  SimServer sim;
  Settings s = good_settings(sim);
  s.disk_offering_id = seed::fixed_disk_offering;
  s.template_id = seed::unready_template;
  s.service_offering_id = "so000000-0000-4000-8000-0000000000ff";
  s.network_ids.push_back("n0000000-0000-4000-8000-0000000000ff");
  s.oma_mac = "02:00:00:00:ff:ff";
  ValidationReport r = validate_settings(s, SimServer::fast_client_options());
  ASSERT_EQ(r.problems.size(), 5u) << all(r);
  std::string text = all(r);
  EXPECT_NE(text.find("fixed size"), std::string::npos) << text;
  EXPECT_NE(text.find("not ready"), std::string::npos) << text;
  EXPECT_NE(text.find("service offering so000000-0000-4000-8000-0000000000ff"), std::string::npos);
  EXPECT_NE(text.find("network n0000000-0000-4000-8000-0000000000ff"), std::string::npos);
  EXPECT_NE(text.find("02:00:00:00:ff:ff"), std::string::npos);
}

// A template per OS family or distro: each must be ready in the zone, and its key an OS
// family or distro inspection reports; each problem names its key. Stored and read back.
TEST(Settings, OsTemplatesAreCheckedEachUnderItsKey) {
  SimServer sim;
  Settings s = good_settings(sim);
  s.os_templates = {{"windows", seed::windows_template}, {"debian", seed::debian_template}};
  ValidationReport ok = validate_settings(s, SimServer::fast_client_options());
  EXPECT_TRUE(ok.ok()) << all(ok);

  s.os_templates = {{"windows", seed::unready_template},
                    {"debain", seed::debian_template},
                    {"linux", "t0000000-0000-4000-8000-0000000000ff"}};
  ValidationReport r = validate_settings(s, SimServer::fast_client_options());
  ASSERT_EQ(r.problems.size(), 3u) << all(r);
  std::map<std::string, std::string> by_field;
  for (size_t i = 0; i < r.fields.size(); ++i) by_field[r.fields[i]] = r.problems[i];
  EXPECT_NE(by_field["os_templates.windows"].find("not ready"), std::string::npos) << all(r);
  EXPECT_NE(by_field["os_templates.debain"].find("no OS family or distro"), std::string::npos) << all(r);
  EXPECT_NE(by_field["os_templates.linux"].find("does not exist"), std::string::npos) << all(r);

  Json stored = settings_to_json(s, [](const std::string& v) { return v; });
  EXPECT_EQ(settings_from_json(stored, [](const std::string& v) { return v; }).os_templates, s.os_templates);
}

TEST(Settings, MissingFieldsAreAllNamed) {
  Settings s;
  s.api_url = "http://127.0.0.1:1/client/api";
  ValidationReport r = validate_settings(s);
  EXPECT_EQ(r.problems.size(), 8u) << all(r);  // 7 fields and the networks
}

TEST(Settings, HttpApiUrlIsRefusedUnlessAllowed) {
  Settings s;
  s.api_url = "http://cloud.example:8080/client/api";
  try {
    check_settings(s, ClientOptions{});
    FAIL() << "an http:// API URL was accepted";
  } catch (const std::exception& e) {  // a FieldError naming api_url
    std::string m = e.what();
    EXPECT_EQ(m.rfind("api_url: ", 0), 0u) << m;
    EXPECT_NE(m.find("https://"), std::string::npos) << m;
  }
  ClientOptions lab;
  lab.allow_insecure_http = true;
  EXPECT_NO_THROW(check_settings(s, lab));
  s.api_url = "https://cloud.example:8443/client/api";
  EXPECT_NO_THROW(check_settings(s, ClientOptions{}));
}

TEST(Settings, WrongSecretIsOneClearProblem) {
  SimServer sim;
  Settings s = good_settings(sim);
  s.secret_key = "wrong";
  ValidationReport r = validate_settings(s, SimServer::fast_client_options());
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(r.problems[0].find("401"), std::string::npos);
  EXPECT_EQ(r.problems[0].find("wrong"), std::string::npos) << "the secret leaked";
}

TEST(Settings, AccountThatMayNotAttachVolumesIsReported) {
  test::SimOptions o;
  o.deny_apis = {"attachVolume"};
  SimServer sim(o);
  ValidationReport r = validate_settings(good_settings(sim), SimServer::fast_client_options());
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(r.problems[0].find("attachVolume"), std::string::npos);
}

TEST(Settings, OmaVmOfAnotherAccountIsReported) {
  test::SimOptions o;
  o.oma_account = "someone-else";
  SimServer sim(o);
  ValidationReport r = validate_settings(good_settings(sim), SimServer::fast_client_options());
  ASSERT_EQ(r.problems.size(), 1u) << all(r);
  EXPECT_NE(r.problems[0].find("someone-else"), std::string::npos) << r.problems[0];
}

}  // namespace
}  // namespace mk::cloudstack
