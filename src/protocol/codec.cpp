#include "protocol/codec.h"

#include "protocol/names.h"

namespace mk::protocol::codec {

using nlohmann::json;

json opt(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }

std::optional<std::string> opt_of(const json& j, const char* name) {
  const json& v = j.at(name);
  return v.is_null() ? std::nullopt : std::optional<std::string>(v.get<std::string>());
}

json checked(json j, const schema::Schema& s, void (*semantic)(const json&)) {
  schema::validate(j, s);
  if (semantic) semantic(j);
  return j;
}

void uuid_check(const std::string& v, const std::string& path) { check_uuid(v, path); }
void host_check(const std::string& v, const std::string& path) { check_host(v, path); }

}  // namespace mk::protocol::codec
