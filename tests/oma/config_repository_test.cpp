// ConfigRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h):
// API tokens by hash, revocation, settings.
#include <gtest/gtest.h>

#include "oma/errors.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void TokensAreFoundByHashUntilRevoked(db::Database&, Repositories& r) {
  r.config.insert_token({"tok-1", "admin", TokenRole::Admin, now_ms(), {}}, std::string(64, 'a'));
  r.config.insert_token({"tok-2", "ops", TokenRole::Operator, now_ms(), {}}, std::string(64, 'b'));
  auto t = r.config.find_live_token(std::string(64, 'a'));
  ASSERT_TRUE(t);
  EXPECT_EQ(t->role, TokenRole::Admin);
  EXPECT_EQ(r.config.find_live_token(std::string(64, 'b'))->role, TokenRole::Operator);
  r.config.revoke_token("tok-1");
  EXPECT_FALSE(r.config.find_live_token(std::string(64, 'a')));
  EXPECT_THROW(r.config.revoke_token("tok-1"), NotFound);
  EXPECT_EQ(r.config.count_tokens(), 2);
  auto all = r.config.list_tokens();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_TRUE(all[0].revoked_at || all[1].revoked_at);
}

void SettingsAreReplacedAndKeepTheirSecretFlag(db::Database&, Repositories& r) {
  r.config.put_setting("cloudstack.url", "http://cs", false);
  r.config.put_setting("cloudstack.url", "http://cs2", false);
  r.config.put_setting("vcenter.password", "v1:sealed", true);
  EXPECT_EQ(r.config.get_setting("cloudstack.url")->value, "http://cs2");
  EXPECT_FALSE(r.config.get_setting("nope"));
  auto all = r.config.list_settings();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].name, "cloudstack.url");
  EXPECT_FALSE(all[0].encrypted);
  EXPECT_TRUE(all[1].encrypted);
}

}  // namespace

Scenarios config_repository_scenarios() {
  return {{"TokensAreFoundByHashUntilRevoked", TokensAreFoundByHashUntilRevoked},
          {"SettingsAreReplacedAndKeepTheirSecretFlag", SettingsAreReplacedAndKeepTheirSecretFlag}};
}

}  // namespace mk::oma::test
