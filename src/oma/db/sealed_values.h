// SealedValues: every place the OMA's database keeps a value sealed with its SecretBox,
// what each is bound to, and the three things done across all of them: re-sealing the
// values of older OMAs with their binding (migration 6), checking at start that the key
// file is the one the values were sealed with, and rotating the key.
//
// The places: vmas.api_token_sealed and vmas.nbd_psk_sealed (row: vma_id),
// vma_pairing_codes.api_token_sealed and .nbd_psk_sealed (row: code_hash),
// nbd_client_ca.key_sealed (the service's NBD client CA key, row: its name), and the
// settings flagged encrypted: the value itself (purpose "settings", row: the setting's
// name) or, for a JSON setting (the CloudStack settings), each "..._sealed" field in it
// (row: "NAME.FIELD"). Code that seals or opens one of them uses these bindings.
//
// Free functions; thread-safe as the Database is.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "oma/crypto.h"
#include "oma/db/database.h"

namespace mk::oma {

inline constexpr const char* kVmaTokenPurpose = "vmas.api_token_sealed";
inline constexpr const char* kVmaPskPurpose = "vmas.nbd_psk_sealed";
inline constexpr const char* kCodeTokenPurpose = "vma_pairing_codes.api_token_sealed";
inline constexpr const char* kCodePskPurpose = "vma_pairing_codes.nbd_psk_sealed";
inline constexpr const char* kNbdCaKeyPurpose = "nbd_client_ca.key_sealed";
inline constexpr const char* kSettingPurpose = "settings";
// The setting that records which key sealed the database's values (SecretBox::key_id).
inline constexpr const char* kKeyIdSetting = "secrets.key_id";

// How many sealed values the database holds.
int64_t count_sealed_values(db::Database& db);

// Re-seals every "v1:" value with its binding (call inside a transaction); returns how
// many. `secrets` is asked for the key only when there is a value to re-seal; the key's
// id is then recorded. Throws mk::Error naming the value that does not open.
int reseal_unbound_values(db::Database& db, const std::function<const SecretBox&()>& secrets);

// The SecretBox for this database at start, after migration: loads `key_file`; makes a
// new one only when the database holds no sealed value and records no key. Throws
// mk::Error saying what to restore when the file is missing or is another key (its id
// differs from the recorded one) while the database depends on it.
std::unique_ptr<SecretBox> open_secrets_key(db::Database& db, const std::string& key_file);

// Replaces the secrets key: a new key is written to KEY.next, every sealed value is
// opened with the old key and sealed with the new one in one transaction that also
// records the new key's id, then KEY becomes KEY.retired-ID (backups of the database
// taken before open with it) and KEY.next becomes KEY. A crash before the commit leaves
// the old key in use; a crash after it is finished by the next open_secrets_key(). The
// caller makes sure no OMA uses the database meanwhile (it holds the old key).
struct KeyRotation {
  int values = 0;                // how many values were re-sealed
  std::string key_id;            // the new key's id
  std::string retired_key_file;  // where the old key is now
};
KeyRotation rotate_secrets_key(db::Database& db, const std::string& key_file);

}  // namespace mk::oma
