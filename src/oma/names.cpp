#include "oma/names.h"

#include <fmt/format.h>
#include <openssl/rand.h>

#include <cctype>

#include "common/error.h"

namespace mk::oma {
namespace {

bool is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

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
    if (i % 3 == 2 ? s[i] != ':' : !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

void check_uuid(std::string_view s, std::string_view field) {
  if (!is_uuid(s)) {
    throw UsageError(fmt::format("{}: expected a lowercase UUID like 4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d", field));
  }
}

void check_disk_key(std::string_view s, std::string_view field) {
  if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string_view::npos) {
    throw UsageError(fmt::format("{}: expected a VMware disk key (1 to 9 digits, like 2000)", field));
  }
}

void check_unit(int64_t unit, std::string_view field) {
  if (unit < 0 || unit > 255) throw UsageError(fmt::format("{}: expected a unit number from 0 to 255", field));
}

void check_display_name(std::string_view s, std::string_view field, size_t max) {
  if (s.empty() || s.size() > max) {
    throw UsageError(fmt::format("{}: must be 1 to {} bytes long", field, max));
  }
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      throw UsageError(fmt::format("{}: must not contain NUL, line breaks or other control characters", field));
    }
    if (c == '/' || c == '\\') throw UsageError(fmt::format("{}: must not contain path separators (/ or \\)", field));
  }
}

std::string export_name(std::string_view vm_uuid, int64_t unit) {
  check_uuid(vm_uuid, "vm_id");
  check_unit(unit, "unit");
  return fmt::format("migration-vm-{}-disk{}", vm_uuid, unit);
}

bool is_export_name(std::string_view s) {
  constexpr std::string_view prefix = "migration-vm-";
  if (s.substr(0, prefix.size()) != prefix || s.size() < prefix.size() + 36 + 5) return false;
  if (!is_uuid(s.substr(prefix.size(), 36))) return false;
  std::string_view rest = s.substr(prefix.size() + 36);
  if (rest.substr(0, 5) != "-disk") return false;
  std::string_view digits = rest.substr(5);
  if (digits.empty() || digits.size() > 3 || digits.find_first_not_of("0123456789") != std::string_view::npos)
    return false;
  if (digits.size() > 1 && digits[0] == '0') return false;
  return std::stoi(std::string(digits)) <= 255;
}

std::string new_uuid() {
  unsigned char b[16];
  if (RAND_bytes(b, sizeof b) != 1) throw Error("cannot generate a UUID: the system random generator failed");
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  std::string hex;
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) hex += '-';
    hex += fmt::format("{:02x}", b[i]);
  }
  return hex;
}

}  // namespace mk::oma
