// Secrets at rest: API token generation and hashing, and encryption of stored
// credentials (CloudStack keys, vCenter passwords) with a key file.
//
// SecretBox uses AES-256-GCM (OpenSSL EVP) with a random 96-bit nonce per value; the
// 32-byte key lives in a file of mode 0600 created at first start and never leaves it.
// Ciphertexts are "v1:" + base64(nonce | ciphertext | tag). Thread-safe (immutable
// after construction).
#pragma once

#include <string>

namespace mk::oma {

// A new API token ("mko_" + 64 hex chars, 256 random bits).
std::string new_token();
// Lowercase hex SHA-256: what the database stores instead of a token.
std::string sha256_hex(const std::string& data);

class SecretBox {
 public:
  // Loads the key from `key_file`, creating it (mode 0600, random) if missing. Throws
  // mk::Error if the file exists with another size or is readable by others.
  explicit SecretBox(const std::string& key_file);
  std::string seal(const std::string& plaintext) const;
  // Throws mk::Error if the value was not sealed with this key or was altered.
  std::string open(const std::string& sealed) const;

 private:
  std::string key_file_;
  unsigned char key_[32];
};

}  // namespace mk::oma
