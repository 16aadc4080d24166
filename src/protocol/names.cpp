#include "protocol/names.h"

#include <fmt/format.h>
#include <sys/random.h>

#include <cerrno>
#include <cstring>

#include "common/host_name.h"
#include "common/json_schema.h"

namespace mk::protocol {
namespace {

using schema::FieldError;

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }
bool is_hex(char c) { return is_hex_lower(c) || (c >= 'A' && c <= 'F'); }
bool is_digits(std::string_view s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos; }

}  // namespace

bool is_uuid(std::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !is_hex_lower(s[i])) return false;
  }
  return true;
}

bool is_mac_address(std::string_view s) {
  if (s.size() != 17) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    if (i % 3 == 2 ? s[i] != ':' : !is_hex(s[i])) return false;
  }
  return true;
}

bool is_host(std::string_view s) { return is_host_name_or_ip(s); }

void check_uuid(std::string_view s, std::string_view field) {
  if (!is_uuid(s)) {
    throw FieldError(std::string(field), "expected a lowercase UUID like 4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d");
  }
}

void check_host(std::string_view s, std::string_view field) {
  if (!is_host(s)) throw FieldError(std::string(field), "expected a host name or an IP address");
}

void check_unit(int64_t unit, std::string_view field) {
  if (unit < 0 || unit > 255) throw FieldError(std::string(field), "expected a unit number from 0 to 255");
}

void check_display_name(std::string_view s, std::string_view field, size_t max) {
  if (s.empty() || s.size() > max) throw FieldError(std::string(field), fmt::format("must be 1 to {} bytes long", max));
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      throw FieldError(std::string(field), "must not contain NUL, line breaks or other control characters");
    }
    if (c == '/' || c == '\\') throw FieldError(std::string(field), "must not contain path separators (/ or \\)");
  }
}

std::string new_uuid() {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = ::getrandom(b + got, sizeof b - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error(fmt::format("cannot generate a UUID: getrandom failed: {}", std::strerror(errno)));
    got += static_cast<size_t>(n);
  }
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // variant 10xx
  std::string out;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
    out += fmt::format("{:02x}", b[i]);
  }
  return out;
}

std::string export_name(std::string_view vm_uuid, int64_t unit) {
  check_uuid(vm_uuid, "vm_id");
  check_unit(unit, "unit");
  return fmt::format("migration-vm-{}-disk{}", vm_uuid, unit);
}

bool is_export_name(std::string_view s) {
  constexpr std::string_view prefix = "migration-vm-", infix = "-disk";
  if (!s.starts_with(prefix) || s.size() < prefix.size() + 36 + infix.size() + 1) return false;
  if (!is_uuid(s.substr(prefix.size(), 36))) return false;
  std::string_view rest = s.substr(prefix.size() + 36);
  if (!rest.starts_with(infix)) return false;
  std::string_view digits = rest.substr(infix.size());
  if (!is_digits(digits) || digits.size() > 3 || (digits.size() > 1 && digits[0] == '0')) return false;
  return std::stoi(std::string(digits)) <= 255;
}

DiskKey::DiskKey(int64_t value) {
  if (value < 0 || value > kMax) {
    throw FieldError("disk_key", fmt::format("{} is not a VMware disk key (0 to {})", value, kMax));
  }
  value_ = static_cast<int32_t>(value);
}

bool DiskKey::valid(std::string_view text) {
  if (!is_digits(text) || text.size() > 10 || (text.size() > 1 && text[0] == '0')) return false;
  return std::stoll(std::string(text)) <= kMax;
}

DiskKey DiskKey::parse(std::string_view text, std::string_view field) {
  if (!valid(text)) {
    throw FieldError(std::string(field),
                     fmt::format("expected a VMware device key (0 to {}, no leading zeros, like 2000)", kMax));
  }
  return DiskKey(std::stoll(std::string(text)));
}

}  // namespace mk::protocol
