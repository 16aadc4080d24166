// What the message codecs (messages.cpp, enrolment.cpp) share: optional strings in and out
// of JSON, a message validated as its receiver validates it, and the field checks both use.
// Internal to mk_protocol; stateless, so thread-safe.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "common/json_schema.h"

namespace mk::protocol::codec {

// null for an absent string, and back.
nlohmann::json opt(const std::optional<std::string>& s);
std::optional<std::string> opt_of(const nlohmann::json& j, const char* name);

// `j` validated against `s`, then by `semantic` (the checks across fields) when given.
nlohmann::json checked(nlohmann::json j, const schema::Schema& s,
                       void (*semantic)(const nlohmann::json&) = nullptr);

// Field checks for schema::Field::check: they throw schema::FieldError naming `path`.
void uuid_check(const std::string& v, const std::string& path);
void host_check(const std::string& v, const std::string& path);

}  // namespace mk::protocol::codec
