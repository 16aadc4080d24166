// CloudStack's rules for VM names.
//
// A VM's `name` becomes its host name: CloudStack refuses anything but an RFC 1123 label
// (letters, digits and hyphens, 1 to 63 characters, not starting with a digit or a
// hyphen, not ending with a hyphen). VMware allows almost anything ("Web Server (prod)",
// "db_01", "1c-api"), so the CloudStack name is derived from the VMware name, and the
// VMware name is kept as the `displayname`, which has no such rule. Pure functions.
#pragma once

#include <ctime>
#include <string>

namespace mk::cloudstack {

inline constexpr size_t kMaxHostNameLength = 63;

// True when CloudStack accepts `name` as a VM name.
bool is_host_name(const std::string& name);

// A valid name from `vmware_name`: letters and digits kept, every other run of
// characters becomes one hyphen (none leading), "vm-" before a leading digit, at most
// `max_length` characters (without a trailing hyphen). "vm-<first 8 hex digits of
// vm_uuid>" when nothing usable is left.
std::string host_name_for(const std::string& vmware_name, const std::string& vm_uuid,
                          size_t max_length = kMaxHostNameLength);

// `base` with "-<first 6 hex digits of vm_uuid>" appended, shortened so that the whole
// stays a valid name: the name to use when `base` is taken by another VM.
std::string disambiguated_host_name(const std::string& base, const std::string& vm_uuid);

// "<name>-test-<YYYYMMDDhhmmss>" (UTC), with the name shortened so that the whole is at
// most 63 characters.
std::string test_vm_host_name(const std::string& vmware_name, const std::string& vm_uuid, std::time_t when);

}  // namespace mk::cloudstack
