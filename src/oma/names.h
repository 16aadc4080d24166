// Validation of every identifier that comes from VMware or a request before it is used
// in a file name, a symlink name, a config file or SQL. Free functions, thread-safe.
//
// The rule is allow-listing: a VM UUID is 36 lowercase hex characters and dashes in the
// 8-4-4-4-12 shape, a disk key is 1-9 digits, a unit 0-255, a display name is printable
// UTF-8 without path separators, NUL or line breaks. Anything else throws UsageError
// naming the field, so the API answers 400 with it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mk::oma {

bool is_uuid(std::string_view s);                 // lowercase 8-4-4-4-12 hex
bool is_mac_address(std::string_view s);          // six hex pairs joined by ':'

void check_uuid(std::string_view s, std::string_view field);
void check_disk_key(std::string_view s, std::string_view field);
void check_unit(int64_t unit, std::string_view field);
// Human-readable names (VM names, token names, labels): 1..max bytes, no '/', '\\',
// NUL, CR, LF or other control characters.
void check_display_name(std::string_view s, std::string_view field, size_t max = 255);

// "migration-vm-{uuid}-disk{unit}", after checking both parts.
std::string export_name(std::string_view vm_uuid, int64_t unit);
// True for names export_name() can produce: the only names an export backend accepts.
bool is_export_name(std::string_view s);

// A fresh random UUID (version 4), lowercase.
std::string new_uuid();

}  // namespace mk::oma
