#include "cloudstack/signer.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <vector>

#include "common/error.h"
#include "common/text.h"

namespace mk::cloudstack {
namespace {

// Pairs in the map's order, which is the server's: it sorts the names as received,
// case-sensitively, and lower-cases only the joined string afterwards.
std::vector<std::pair<std::string, std::string>> sorted_pairs(const Params& params) {
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const auto& [k, v] : params) pairs.emplace_back(k, url_encode(v));
  return pairs;
}

std::string join(const std::vector<std::pair<std::string, std::string>>& pairs) {
  std::string out;
  for (const auto& [k, v] : pairs) {
    if (!out.empty()) out += '&';
    out += k;
    out += '=';
    out += v;
  }
  return out;
}

}  // namespace

std::string url_encode(std::string_view value) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(value.size() * 3);
  for (unsigned char c : value) {
    bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.' || c == '*';
    if (keep) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string encode_query(const Params& params) { return join(sorted_pairs(params)); }

std::string string_to_sign(const Params& params) { return mk::to_lower(encode_query(params)); }

std::string hmac_sha1_base64(std::string_view key, std::string_view message) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (!HMAC(EVP_sha1(), key.data(), static_cast<int>(key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest,
            &digest_len)) {
    throw Error("CloudStack request signing: HMAC-SHA1 failed in OpenSSL");
  }
  std::string out(4 * ((digest_len + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest,
                          static_cast<int>(digest_len));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string sign(const Params& params, std::string_view secret_key) {
  return hmac_sha1_base64(secret_key, string_to_sign(params));
}

}  // namespace mk::cloudstack
