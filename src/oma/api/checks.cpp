#include "oma/api/checks.h"

#include <algorithm>
#include <cctype>

#include "oma/names.h"
#include "oma/pairing/authorized_keys.h"

namespace mk::oma::api {

void uuid_check(const std::string& v, const std::string& path) {
  if (!is_uuid(v)) throw FieldError(path, "must be a lowercase UUID like 4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d");
}

void name_check(const std::string& v, const std::string& path) {
  try {
    check_display_name(v, path);
  } catch (const UsageError& e) {
    throw FieldError(path, std::string(e.what()).substr(path.size() + 2));
  }
}

void disk_key_check(const std::string& v, const std::string& path) { protocol::DiskKey::parse(v, path); }

void mac_check(const std::string& v, const std::string& path) {
  if (!is_mac_address(v)) throw FieldError(path, "must be a MAC address like 00:50:56:aa:bb:cc");
}

void ssh_key_check(const std::string& v, const std::string& path) {
  try {
    normalize_vma_public_key(v);
  } catch (const UsageError& e) {
    throw FieldError(path, e.what());
  }
}

// CloudStack ids: UUIDs in practice; letters, digits and '-' are all an id may hold.
void id_check(const std::string& v, const std::string& path) {
  bool ok = !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
  if (!ok) throw FieldError(path, "must be a CloudStack id (letters, digits and '-')");
}

void url_check(const std::string& v, const std::string& path) {
  if (v.rfind("http://", 0) != 0 && v.rfind("https://", 0) != 0)
    throw FieldError(path, "must be an http:// or https:// URL, like https://cloud.example:8080/client/api");
}

Reply error_reply(int status, const std::string& message, const std::string& field) {
  nlohmann::json b = {{"error", message}};
  if (!field.empty()) b["field"] = field;
  return {status, b, ""};
}

}  // namespace mk::oma::api
