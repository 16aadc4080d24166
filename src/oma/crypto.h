// Secrets at rest: API token generation and hashing, and encryption of stored
// credentials (CloudStack keys, vCenter passwords) with a key file.
//
// SecretBox uses AES-256-GCM (OpenSSL EVP) with a random 96-bit nonce per value; the
// 32-byte key lives in a file of mode 0600 and never leaves it. Every value is bound to
// where it is stored: the binding (seal_binding: what the value is for and which row
// holds it) is GCM's associated data, so a sealed value copied to another row or
// setting does not open there. Ciphertexts are "v2:" + base64(nonce | ciphertext |
// tag). "v1:" values (no binding, before migration 6) open only through open_unbound(),
// which the migration that re-seals them uses.
//
// The key and the database belong together: the database records the key's id
// (key_id(), an HMAC of a fixed text, which reveals nothing of the key) and
// open_secrets_key() refuses a missing or different key file while the database holds
// sealed values, naming the file to restore; a new key is made only for a database
// without any. Thread-safe (immutable after construction).
#pragma once

#include <string>
#include <string_view>

namespace mk::oma {

// A new API token ("mko_" + 64 hex chars, 256 random bits).
std::string new_token();
// Lowercase hex SHA-256: what the database stores instead of a token.
std::string sha256_hex(const std::string& data);

// What a sealed value is for (its table and column, or setting) and the key of the row
// that holds it: "vmas.api_token_sealed/9f1c...".
std::string seal_binding(std::string_view purpose, std::string_view row);

class SecretBox {
 public:
  // Loads the key from `key_file`, creating it (mode 0600, random) if missing. Throws
  // mk::Error if the file exists with another size or is readable by others.
  explicit SecretBox(const std::string& key_file);
  // Loads an existing key file only; throws mk::Error naming the file if it is missing.
  static SecretBox existing(const std::string& key_file);

  std::string seal(const std::string& plaintext, const std::string& binding) const;
  // Throws mk::Error if the value was not sealed with this key for this binding, or
  // was altered.
  std::string open(const std::string& sealed, const std::string& binding) const;
  // A "v1:" value, sealed without binding (migration only).
  std::string open_unbound(const std::string& sealed) const;
  // Identifies the key without revealing it (hex HMAC-SHA256 of a fixed text).
  std::string key_id() const;
  const std::string& key_file() const { return key_file_; }

 private:
  struct Existing {};
  SecretBox(const std::string& key_file, Existing);
  void read_key(int fd);
  std::string open_with(const std::string& sealed, std::string_view prefix, const std::string& aad) const;

  std::string key_file_;
  unsigned char key_[32];
};

}  // namespace mk::oma
