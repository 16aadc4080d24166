#include "oma/db/sealed_values.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/files.h"
#include "common/log.h"

namespace mk::oma {
namespace {

struct SealedColumn {
  const char* table;
  const char* column;
  const char* purpose;
  const char* row_key;
  int since = 3;  // the schema version that made the table
};

const SealedColumn kColumns[] = {
    {"vmas", "api_token_sealed", kVmaTokenPurpose, "vma_id"},
    {"vmas", "nbd_psk_sealed", kVmaPskPurpose, "vma_id"},
    {"vma_pairing_codes", "api_token_sealed", kCodeTokenPurpose, "code_hash"},
    {"vma_pairing_codes", "nbd_psk_sealed", kCodePskPurpose, "code_hash"},
    {"nbd_client_ca", "key_sealed", kNbdCaKeyPurpose, "name", 15},
};

// The columns whose tables exist: migration 6 runs before later migrations made theirs.
std::vector<SealedColumn> present_columns(db::Database& db) {
  auto rows = db.query("SELECT MAX(version) FROM schema_migrations");
  int64_t version = rows.empty() ? 0 : rows[0].i64(0);
  std::vector<SealedColumn> out;
  for (const auto& c : kColumns)
    if (c.since <= version) out.push_back(c);
  return out;
}

bool unbound(const std::string& v) { return v.rfind("v1:", 0) == 0; }
bool sealed(const std::string& v) { return unbound(v) || v.rfind("v2:", 0) == 0; }

std::optional<std::string> recorded_key_id(db::Database& db) {
  auto rows = db.query("SELECT value FROM settings WHERE name = ?", {std::string(kKeyIdSetting)});
  return rows.empty() ? std::nullopt : rows[0].opt(0);
}

void record_key_id(db::Database& db, const SecretBox& box) {
  db.exec("DELETE FROM settings WHERE name = ?", {std::string(kKeyIdSetting)});
  db.exec("INSERT INTO settings (name, value, encrypted, updated_at) VALUES (?, ?, 0, ?)",
          {std::string(kKeyIdSetting), box.key_id(), now_ms()});
}

// A "v1:" value re-sealed with its binding (migration 6); the error names where it is.
std::string reseal(const SecretBox& box, const std::string& v1, const std::string& binding) {
  try {
    return box.seal(box.open_unbound(v1), binding);
  } catch (const Error& e) {
    throw Error(fmt::format("migration 6 (bind sealed values to their rows): {}: {}; restore the secrets.key that "
                            "belongs to this database",
                            binding, e.what()));
  }
}

// What to do with one sealed value: its new text, or nullopt to leave it.
using Rewrite = std::function<std::optional<std::string>(const std::string& value, const std::string& binding)>;

int rewrite_columns(db::Database& db, const Rewrite& f) {
  int n = 0;
  for (const auto& c : present_columns(db)) {
    auto rows = db.query(fmt::format("SELECT {}, {} FROM {} WHERE {} IS NOT NULL", c.row_key, c.column, c.table,
                                     c.column));
    for (const auto& r : rows) {
      auto v = f(r.str(1), seal_binding(c.purpose, r.str(0)));
      if (!v) continue;
      db.exec(fmt::format("UPDATE {} SET {} = ? WHERE {} = ?", c.table, c.column, c.row_key), {*v, r.str(0)});
      ++n;
    }
  }
  return n;
}

// A whole sealed setting, or the "..._sealed" fields of a JSON one.
int rewrite_settings(db::Database& db, const Rewrite& f) {
  int n = 0;
  for (const auto& r : db.query("SELECT name, value FROM settings WHERE encrypted = 1")) {
    std::string name = r.str(0), value = r.str(1);
    if (sealed(value)) {
      auto v = f(value, seal_binding(kSettingPurpose, name));
      if (!v) continue;
      value = *v;
      ++n;
    } else {
      auto j = nlohmann::json::parse(value, nullptr, false);
      if (!j.is_object()) continue;
      bool changed = false;
      for (auto& [field, v] : j.items()) {
        if (!v.is_string() || !field.ends_with("_sealed") || !sealed(v.get<std::string>())) continue;
        auto w = f(v.get<std::string>(), seal_binding(kSettingPurpose, name + "." + field));
        if (!w) continue;
        v = *w;
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

int rewrite_sealed_values(db::Database& db, const Rewrite& f) { return rewrite_columns(db, f) + rewrite_settings(db, f); }

// Key files: the one in use, the next one while a rotation runs, and the retired one.
std::string next_key_file(const std::string& key_file) { return key_file + ".next"; }
std::string retired_key_file(const std::string& key_file, const std::string& key_id) {
  return fmt::format("{}.retired-{}", key_file, key_id.substr(0, 16));
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw Error(fmt::format("cannot rename {} to {}: {}", from, to, std::strerror(errno)));
}

// Makes the next key the key in use, keeping the old one as retired (backups of the
// database taken before the rotation open with it). The database already records the
// next key's id.
std::string install_next_key(const std::string& key_file, const std::string& old_id) {
  std::string retired = retired_key_file(key_file, old_id);
  if (::access(key_file.c_str(), F_OK) == 0) rename_or_throw(key_file, retired);
  rename_or_throw(next_key_file(key_file), key_file);
  fsync_directory(parent_directory(key_file));
  return retired;
}

// A rotation stopped between its commit and the renaming of the key files left the
// next key beside the old one: if the database records the next key, the rotation is
// finished now; if not, it never committed and the next key is removed.
void finish_or_forget_rotation(const std::string& key_file, const std::string& recorded) {
  const std::string next = next_key_file(key_file);
  if (::access(next.c_str(), F_OK) != 0) return;
  if (SecretBox::existing(next).key_id() != recorded) {
    ::unlink(next.c_str());
    log::warn("removed {}: a key rotation stopped before its commit (the values are still sealed with {})", next,
              key_file);
    return;
  }
  std::string old_id = ::access(key_file.c_str(), F_OK) == 0 ? SecretBox::existing(key_file).key_id() : "lost";
  std::string retired = install_next_key(key_file, old_id);
  log::warn("finished the key rotation that stopped after its commit: {} is the new key, the old one is {}", key_file,
            retired);
}

}  // namespace

int64_t count_sealed_values(db::Database& db) {
  int64_t n = db.query("SELECT COUNT(*) FROM settings WHERE encrypted = 1")[0].i64(0);
  for (const auto& c : present_columns(db))
    n += db.query(fmt::format("SELECT COUNT(*) FROM {} WHERE {} IS NOT NULL", c.table, c.column))[0].i64(0);
  return n;
}

int reseal_unbound_values(db::Database& db, const std::function<const SecretBox&()>& secrets) {
  const SecretBox* used = nullptr;
  int n = rewrite_sealed_values(db, [&](const std::string& v, const std::string& binding) -> std::optional<std::string> {
    if (!unbound(v)) return std::nullopt;
    if (!used) {
      if (!secrets) throw Error("the database holds sealed values to re-seal, but no secrets key was given");
      used = &secrets();
    }
    return reseal(*used, v, binding);
  });
  if (used) record_key_id(db, *used);
  return n;
}

std::unique_ptr<SecretBox> open_secrets_key(db::Database& db, const std::string& key_file) {
  auto recorded = recorded_key_id(db);
  if (recorded) finish_or_forget_rotation(key_file, *recorded);
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

KeyRotation rotate_secrets_key(db::Database& db, const std::string& key_file) {
  auto old = open_secrets_key(db, key_file);
  const std::string next_file = next_key_file(key_file);
  SecretBox next(next_file);  // a new random key, written and synced before anything is sealed with it
  KeyRotation r;
  try {
    db.transaction([&] {
      r.values = rewrite_sealed_values(db, [&](const std::string& v, const std::string& binding) {
        return std::optional<std::string>(next.seal(old->open(v, binding), binding));
      });
      record_key_id(db, next);
    });
  } catch (...) {
    ::unlink(next_file.c_str());  // nothing was committed: the old key stays the key
    throw;
  }
  r.key_id = next.key_id();
  r.retired_key_file = install_next_key(key_file, old->key_id());
  return r;
}

}  // namespace mk::oma
