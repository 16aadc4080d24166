#include "cloudstack/names.h"

#include <fmt/format.h>

#include <cctype>

namespace mk::cloudstack {
namespace {

bool alnum(unsigned char c) { return std::isalnum(c) && c < 0x80; }

std::string hex_of(const std::string& vm_uuid, size_t n) {
  std::string out;
  for (unsigned char c : vm_uuid) {
    if (std::isxdigit(c) && out.size() < n) out += static_cast<char>(std::tolower(c));
  }
  while (out.size() < n) out += '0';
  return out;
}

std::string trim_to(std::string name, size_t max_length) {
  if (name.size() > max_length) name.resize(max_length);
  while (!name.empty() && name.back() == '-') name.pop_back();
  return name;
}

}  // namespace

bool is_host_name(const std::string& name) {
  if (name.empty() || name.size() > kMaxHostNameLength) return false;
  if (!std::isalpha(static_cast<unsigned char>(name.front())) || name.back() == '-') return false;
  for (unsigned char c : name) {
    if (!alnum(c) && c != '-') return false;
  }
  return true;
}

std::string host_name_for(const std::string& vmware_name, const std::string& vm_uuid, size_t max_length) {
  std::string out;
  for (unsigned char c : vmware_name) {
    if (alnum(c)) {
      out += static_cast<char>(c);
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  if (!out.empty() && out.front() == '-') out.erase(0, 1);
  if (!out.empty() && std::isdigit(static_cast<unsigned char>(out.front()))) out = "vm-" + out;
  out = trim_to(out, max_length);
  if (out.empty()) out = trim_to("vm-" + hex_of(vm_uuid, 8), max_length);
  return out;
}

std::string disambiguated_host_name(const std::string& base, const std::string& vm_uuid) {
  std::string suffix = "-" + hex_of(vm_uuid, 6);
  return trim_to(base, kMaxHostNameLength - suffix.size()) + suffix;
}

std::string test_vm_host_name(const std::string& vmware_name, const std::string& vm_uuid, std::time_t when) {
  std::tm tm{};
  gmtime_r(&when, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
  std::string suffix = fmt::format("-test-{}", stamp);
  return host_name_for(vmware_name, vm_uuid, kMaxHostNameLength - suffix.size()) + suffix;
}

}  // namespace mk::cloudstack
