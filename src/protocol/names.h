// The naming rules both appliances follow, in one place: VM and job UUIDs, VMware disk
// keys, unit numbers, export names, display names and MAC addresses. Every identifier
// that comes from VMware or from the other appliance is checked by these before it is
// used in a file name, a symlink, an NBD export name, a config file or SQL.
//
// The rule is allow-listing:
//   UUID         36 lowercase hex characters and dashes in the 8-4-4-4-12 shape
//   disk key     a VMware device key (an xsd:int): 0 to 2147483647, written in decimal
//                without leading zeros ("2000"); a string on the wire, DiskKey in code
//   unit         0..255, a disk's position in controller/unit order within its VM
//   export name  "migration-vm-{vm uuid}-disk{unit}", nothing else
//   display name 1..max bytes of printable UTF-8 without '/', '\\', NUL or line breaks
// A violation throws schema::FieldError naming the field (a UsageError: 400 in an API).
// Each rule also exists as an ECMAScript regular expression for OpenAPI documents
// (Field::pattern), so that validators built from a document agree with the code; the
// protocol's tests hold the two together. Free functions and a value type; thread-safe.
#pragma once

#include <compare>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace mk::protocol {

inline constexpr const char* kUuidPattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
// 0 to 2147483647 without leading zeros.
inline constexpr const char* kDiskKeyPattern =
    "^(0|[1-9][0-9]{0,8}|1[0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|"
    "214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}|21474836[0-3][0-9]|214748364[0-7])$";
inline constexpr const char* kMacPattern = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$";
inline constexpr const char* kMacOrEmptyPattern = "^([0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5})?$";
inline constexpr const char* kExportNamePattern =
    "^migration-vm-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-disk"
    "(0|[1-9][0-9]?|1[0-9]{2}|2[0-4][0-9]|25[0-5])$";
// RFC 1123 host name (not all digits and dots), IPv4 dotted quad, or IPv6 (the pattern
// admits a superset of IPv6 literals; is_host() asks inet_pton).
inline constexpr const char* kHostPattern =
    "^((?![0-9.]+$)(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    "|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}"
    "|(?=[0-9A-Fa-f.]*:)[0-9A-Fa-f:.]{2,45})$";

bool is_uuid(std::string_view s);         // lowercase 8-4-4-4-12 hex
bool is_mac_address(std::string_view s);  // six hex pairs joined by ':'
bool is_host(std::string_view s);         // mk::is_host_name_or_ip (common/host_name.h)

void check_uuid(std::string_view s, std::string_view field);
void check_host(std::string_view s, std::string_view field);
void check_unit(int64_t unit, std::string_view field);
void check_display_name(std::string_view s, std::string_view field, size_t max = 255);

// A fresh random UUID (version 4, lowercase) from the kernel's random generator: job
// ids, VMA ids, VMA instance ids. Throws mk::Error if the generator fails.
std::string new_uuid();

// "migration-vm-{uuid}-disk{unit}", after checking both parts (fields "vm_id", "unit").
std::string export_name(std::string_view vm_uuid, int64_t unit);
// True for exactly the names export_name() can produce: the only names an export
// backend accepts.
bool is_export_name(std::string_view s);

// A VMware virtual disk's device key: the identity of a disk within its VM, by which
// change IDs are stored. Written as a decimal string on the wire ("2000").
class DiskKey {
 public:
  static constexpr int32_t kMax = 2'147'483'647;

  DiskKey() = default;
  // Throws schema::FieldError("disk_key") unless 0 <= value <= kMax.
  explicit DiskKey(int64_t value);
  // "2000" -> DiskKey(2000). Throws schema::FieldError(field) for anything but a
  // decimal number up to kMax without leading zeros.
  static DiskKey parse(std::string_view text, std::string_view field = "disk_key");
  static bool valid(std::string_view text);

  int32_t value() const { return value_; }
  std::string str() const { return std::to_string(value_); }
  auto operator<=>(const DiskKey&) const = default;
  friend std::ostream& operator<<(std::ostream& os, const DiskKey& k) { return os << k.value_; }

 private:
  int32_t value_ = 0;
};

}  // namespace mk::protocol
