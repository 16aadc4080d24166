#include "oma/db/config_repository.h"

#include <fmt/format.h>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;

const EnumTable<TokenRole>& enum_table(TokenRole) {
  static const EnumTable<TokenRole> t{
      "token role", {{TokenRole::Admin, "admin"}, {TokenRole::Operator, "operator"}, {TokenRole::Viewer, "viewer"}}};
  return t;
}

bool role_grants(TokenRole held, TokenRole needed) {
  auto rank = [](TokenRole r) { return r == TokenRole::Admin ? 2 : r == TokenRole::Operator ? 1 : 0; };
  return rank(held) >= rank(needed);
}

namespace {

// token_hash is written once (insert_token) and only ever compared in SQL: not a field.
const Table<TokenRecord> kTokens{"api_tokens", {column("token_id", &TokenRecord::token_id),
    column("name", &TokenRecord::name), column("role", &TokenRecord::role),
    column("created_at", &TokenRecord::created_at), column("revoked_at", &TokenRecord::revoked_at)}, 1};

const Table<SettingRecord> kSettings{"settings", {column("name", &SettingRecord::name),
    column("value", &SettingRecord::value), column("encrypted", &SettingRecord::encrypted),
    column("updated_at", &SettingRecord::updated_at)}, 1};

}  // namespace

void ConfigRepository::insert_token(const TokenRecord& t, const std::string& token_hash) {
  kTokens.insert(db_, t, {{"token_hash", token_hash}});
}

std::optional<TokenRecord> ConfigRepository::find_live_token(const std::string& token_hash) {
  return kTokens.query_one(db_, "WHERE token_hash = ? AND revoked_at IS NULL", {token_hash});
}

std::vector<TokenRecord> ConfigRepository::list_tokens() {
  return kTokens.query(db_, "ORDER BY created_at, token_id");
}

void ConfigRepository::revoke_token(const std::string& token_id) {
  if (db_.exec("UPDATE api_tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL",
               {now_ms(), token_id}) != 1) {
    throw NotFound(fmt::format("token {} does not exist or is already revoked", token_id));
  }
}

int64_t ConfigRepository::count_tokens() { return db_.query("SELECT COUNT(*) FROM api_tokens")[0].i64(0); }

void ConfigRepository::put_setting(const std::string& name, const std::string& value, bool encrypted) {
  db_.transaction([&] { kSettings.upsert(db_, {name, value, encrypted, now_ms()}); });
}

std::optional<SettingRecord> ConfigRepository::get_setting(const std::string& name) {
  return kSettings.query_one(db_, "WHERE name = ?", {name});
}

std::vector<SettingRecord> ConfigRepository::list_settings() { return kSettings.query(db_, "ORDER BY name"); }

}  // namespace mk::oma
