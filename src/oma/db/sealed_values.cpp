#include "oma/db/sealed_values.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace mk::oma {
namespace {

struct SealedColumn {
  const char* table;
  const char* column;
  const char* purpose;
  const char* row_key;
};

const SealedColumn kColumns[] = {
    {"vmas", "api_token_sealed", kVmaTokenPurpose, "vma_id"},
    {"vmas", "nbd_psk_sealed", kVmaPskPurpose, "vma_id"},
    {"vma_pairing_codes", "api_token_sealed", kCodeTokenPurpose, "code_hash"},
    {"vma_pairing_codes", "nbd_psk_sealed", kCodePskPurpose, "code_hash"},
};

bool unbound(const std::string& v) { return v.rfind("v1:", 0) == 0; }

std::optional<std::string> recorded_key_id(db::Database& db) {
  auto rows = db.query("SELECT value FROM settings WHERE name = ?", {std::string(kKeyIdSetting)});
  return rows.empty() ? std::nullopt : rows[0].opt(0);
}

void record_key_id(db::Database& db, const SecretBox& box) {
  db.exec("DELETE FROM settings WHERE name = ?", {std::string(kKeyIdSetting)});
  db.exec("INSERT INTO settings (name, value, encrypted, updated_at) VALUES (?, ?, 0, ?)",
          {std::string(kKeyIdSetting), box.key_id(), now_ms()});
}

// A sealed value re-sealed with its binding; the error names where it is.
std::string reseal(const SecretBox& box, const std::string& v1, const std::string& binding) {
  try {
    return box.seal(box.open_unbound(v1), binding);
  } catch (const Error& e) {
    throw Error(fmt::format("migration 6 (bind sealed values to their rows): {}: {}; restore the secrets.key that "
                            "belongs to this database",
                            binding, e.what()));
  }
}

int reseal_columns(db::Database& db, const std::function<const SecretBox&()>& secrets) {
  int n = 0;
  for (const auto& c : kColumns) {
    auto rows = db.query(fmt::format("SELECT {}, {} FROM {} WHERE {} LIKE 'v1:%'", c.row_key, c.column, c.table,
                                     c.column));
    for (const auto& r : rows) {
      std::string sealed = reseal(secrets(), r.str(1), seal_binding(c.purpose, r.str(0)));
      db.exec(fmt::format("UPDATE {} SET {} = ? WHERE {} = ?", c.table, c.column, c.row_key), {sealed, r.str(0)});
      ++n;
    }
  }
  return n;
}

// A whole sealed setting, or the "..._sealed" fields of a JSON one.
int reseal_settings(db::Database& db, const std::function<const SecretBox&()>& secrets) {
  int n = 0;
  for (const auto& r : db.query("SELECT name, value FROM settings WHERE encrypted = 1")) {
    std::string name = r.str(0), value = r.str(1);
    if (unbound(value)) {
      value = reseal(secrets(), value, seal_binding(kSettingPurpose, name));
      ++n;
    } else {
      auto j = nlohmann::json::parse(value, nullptr, false);
      if (!j.is_object()) continue;
      bool changed = false;
      for (auto& [field, v] : j.items()) {
        if (!v.is_string() || !unbound(v.get<std::string>())) continue;
        v = reseal(secrets(), v.get<std::string>(), seal_binding(kSettingPurpose, name + "." + field));
        changed = true;
        ++n;
      }
      if (!changed) continue;
      value = j.dump();
    }
    db.exec("UPDATE settings SET value = ? WHERE name = ?", {value, name});
  }
  return n;
}

}  // namespace

int64_t count_sealed_values(db::Database& db) {
  int64_t n = db.query("SELECT COUNT(*) FROM settings WHERE encrypted = 1")[0].i64(0);
  for (const auto& c : kColumns)
    n += db.query(fmt::format("SELECT COUNT(*) FROM {} WHERE {} IS NOT NULL", c.table, c.column))[0].i64(0);
  return n;
}

int reseal_unbound_values(db::Database& db, const std::function<const SecretBox&()>& secrets) {
  const SecretBox* used = nullptr;
  auto box = [&]() -> const SecretBox& {
    if (!used) {
      if (!secrets) throw Error("the database holds sealed values to re-seal, but no secrets key was given");
      used = &secrets();
    }
    return *used;
  };
  int n = reseal_columns(db, box) + reseal_settings(db, box);
  if (used) record_key_id(db, *used);
  return n;
}

std::unique_ptr<SecretBox> open_secrets_key(db::Database& db, const std::string& key_file) {
  auto recorded = recorded_key_id(db);
  int64_t sealed = count_sealed_values(db);
  struct stat st {};
  bool exists = ::stat(key_file.c_str(), &st) == 0;
  if (!exists && (sealed > 0 || recorded)) {
    throw Error(fmt::format("the secrets key {} is missing, but {} holds {} value(s) sealed with it (VMA API tokens, "
                            "NBD keys, CloudStack keys){}: restore {} from a backup of this OMA's data directory; the "
                            "OMA does not start with a new key, which would make them all unreadable",
                            key_file, db.describe(), sealed,
                            recorded ? fmt::format(", key id {}", *recorded) : std::string(), key_file));
  }
  auto box = std::make_unique<SecretBox>(exists ? SecretBox::existing(key_file) : SecretBox(key_file));
  if (recorded && *recorded != box->key_id()) {
    throw Error(fmt::format("the secrets key {} (key id {}) is not the key that sealed the values in {} (key id {}): "
                            "restore the secrets.key that belongs to this database, or point the OMA at the database "
                            "of this key",
                            key_file, box->key_id(), db.describe(), *recorded));
  }
  if (!recorded) db.transaction([&] { record_key_id(db, *box); });
  return box;
}

}  // namespace mk::oma
