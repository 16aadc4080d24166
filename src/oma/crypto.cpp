#include "oma/crypto.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/digest.h"
#include "common/error.h"
#include "common/files.h"

namespace mk::oma {
namespace {

void random(unsigned char* p, size_t n) {
  if (RAND_bytes(p, static_cast<int>(n)) != 1) throw Error("the system random generator failed");
}

std::string b64(const std::string& in) {
  std::string out(4 * ((in.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  out.resize(n);
  return out;
}

std::string unb64(const std::string& in) {
  if (in.size() % 4) throw Error("stored secret is damaged (bad base64)");
  std::string out(in.size() / 4 * 3 + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(in.data()), static_cast<int>(in.size()));
  if (n < 0) throw Error("stored secret is damaged (bad base64)");
  size_t pad = in.empty() ? 0 : (in.back() == '=') + (in.size() > 1 && in[in.size() - 2] == '=');
  out.resize(n - pad);
  return out;
}

using Ctx = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

}  // namespace

std::string new_token() {
  unsigned char b[32];
  random(b, sizeof b);
  return "mko_" + hex_lower(b, sizeof b);
}

std::string sha256_hex(const std::string& data) { return mk::sha256_hex(data); }

std::string seal_binding(std::string_view purpose, std::string_view row) {
  return fmt::format("{}/{}", purpose, row);
}

SecretBox::SecretBox(const std::string& key_file) : key_file_(key_file) {
  int fd = ::open(key_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    random(key_, sizeof key_);
    write_private_file(key_file, std::string(reinterpret_cast<char*>(key_), sizeof key_));
    return;
  }
  read_key(fd);
}

SecretBox::SecretBox(const std::string& key_file, Existing) : key_file_(key_file) {
  int fd = ::open(key_file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    throw Error(fmt::format("the secrets key {} is missing, but the database holds values sealed with it: restore "
                            "that file from a backup of this OMA's data directory (the OMA never makes a new key "
                            "over sealed values: they would all become unreadable)",
                            key_file));
  }
  read_key(fd);
}

SecretBox SecretBox::existing(const std::string& key_file) { return SecretBox(key_file, Existing{}); }

void SecretBox::read_key(int fd) {
  if (fd < 0) throw Error(fmt::format("cannot read the secrets key {}: {}", key_file_, std::strerror(errno)));
  struct stat st {};
  ::fstat(fd, &st);
  ssize_t n = ::read(fd, key_, sizeof key_);
  ::close(fd);
  if ((st.st_mode & 077) != 0) {
    throw Error(fmt::format("the secrets key {} is readable by others (mode {:o}): chmod 600 it", key_file_,
                            st.st_mode & 0777));
  }
  if (n != sizeof key_ || st.st_size != sizeof key_) {
    throw Error(fmt::format("the secrets key {} must hold exactly 32 bytes; restore it from backup", key_file_));
  }
}

std::string SecretBox::key_id() const {
  static const char kText[] = "migratekit-oma secrets key id";
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), key_, sizeof key_, reinterpret_cast<const unsigned char*>(kText), sizeof kText - 1, md,
            &len))
    throw Error("HMAC-SHA256 failed");
  return hex_lower(md, 16);
}

std::string SecretBox::seal(const std::string& plaintext, const std::string& binding) const {
  unsigned char nonce[12];
  random(nonce, sizeof nonce);
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  std::string out(reinterpret_cast<char*>(nonce), sizeof nonce);
  std::string ct(plaintext.size(), '\0');
  int len = 0;
  unsigned char tag[16];
  if (!ctx || EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_, nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(binding.data()),
                        static_cast<int>(binding.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(ct.data()), &len,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), nullptr, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, sizeof tag, tag) != 1) {
    throw Error("cannot encrypt a setting (OpenSSL AES-256-GCM failed)");
  }
  out += ct;
  out.append(reinterpret_cast<char*>(tag), sizeof tag);
  return "v2:" + b64(out);
}

std::string SecretBox::open(const std::string& sealed, const std::string& binding) const {
  if (sealed.rfind("v1:", 0) == 0) {
    throw Error(fmt::format("a stored secret ({}) was sealed by an older OMA and not re-sealed: the database "
                            "migration that binds secrets to their rows did not run on it",
                            binding));
  }
  return open_with(sealed, "v2:", binding);
}

std::string SecretBox::open_unbound(const std::string& sealed) const { return open_with(sealed, "v1:", ""); }

std::string SecretBox::open_with(const std::string& sealed, std::string_view prefix, const std::string& aad) const {
  if (sealed.rfind(prefix, 0) != 0) throw Error("stored secret has an unknown format");
  std::string raw = unb64(sealed.substr(prefix.size()));
  if (raw.size() < 28) throw Error("stored secret is damaged (too short)");
  const auto* p = reinterpret_cast<const unsigned char*>(raw.data());
  size_t ct_len = raw.size() - 28;
  std::string pt(ct_len, '\0');
  int len = 0;
  Ctx ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  unsigned char tag[16];
  std::memcpy(tag, p + 12 + ct_len, 16);
  if (!ctx || EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_, p) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(pt.data()), &len, p + 12,
                        static_cast<int>(ct_len)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, 16, tag) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), nullptr, &len) != 1) {
    throw Error(fmt::format("a stored secret ({}) does not decrypt with the key {}: wrong key file, altered value, "
                            "or a value moved from another row",
                            aad.empty() ? std::string("unbound") : aad, key_file_));
  }
  return pt;
}

}  // namespace mk::oma
