// ConfigRepository: how the OMA is configured at run time: the API tokens that may use
// it (api_tokens) and its settings (settings).
//
// Tokens are stored as their SHA-256 only (the caller hashes); a revoked token stays
// listed but no longer authenticates. Settings are name -> value; a value flagged
// `encrypted` was sealed by the caller (SecretBox) and is never shown.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"

namespace mk::oma {

// What a token may do (api_tokens.role), each role everything the one before it may:
// a viewer reads; an operator also replicates, schedules and runs test failovers; an
// admin also cuts over, and manages settings, network mappings, tokens and VMAs. Which
// role each API route needs is declared with the route (oma/api/routes/).
enum class TokenRole { Admin, Operator, Viewer };
const EnumTable<TokenRole>& enum_table(TokenRole);

// Whether a token of role `held` may do what needs role `needed`.
bool role_grants(TokenRole held, TokenRole needed);

struct TokenRecord {
  std::string token_id, name;
  TokenRole role = TokenRole::Operator;
  int64_t created_at = 0;
  std::optional<int64_t> revoked_at;
};

struct SettingRecord {
  std::string name, value;  // value: sealed when encrypted
  bool encrypted = false;
  int64_t updated_at = 0;
};

class ConfigRepository {
 public:
  explicit ConfigRepository(db::Database& db) : db_(db) {}

  void insert_token(const TokenRecord& t, const std::string& token_hash);
  std::optional<TokenRecord> find_live_token(const std::string& token_hash);
  std::vector<TokenRecord> list_tokens();  // oldest first
  // Throws NotFound if the token does not exist or is already revoked.
  void revoke_token(const std::string& token_id);
  int64_t count_tokens();

  // Inserts or replaces (values already sealed by the caller when `encrypted`).
  void put_setting(const std::string& name, const std::string& value, bool encrypted);
  std::optional<SettingRecord> get_setting(const std::string& name);
  std::vector<SettingRecord> list_settings();  // by name

 private:
  db::Database& db_;
};

}  // namespace mk::oma
