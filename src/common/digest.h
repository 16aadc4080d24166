// Hex text of bytes and SHA-256 digests as lowercase hex: what tokens, signatures and
// key ids are written as. Free functions; thread-safe.
#pragma once

#include <cstddef>
#include <string>

namespace mk {

std::string hex_lower(const unsigned char* bytes, size_t n);
// Throws mk::Error if OpenSSL fails.
std::string sha256_hex(const std::string& data);

}  // namespace mk
