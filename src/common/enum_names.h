// EnumNames: the one place where an enum class meets its names as text (stored in a
// database, sent as JSON, listed in an OpenAPI `enum`, written in a message).
//
// An enum takes part by declaring, next to its definition and in its own namespace,
//
//   enum class JobStatus { Preparing, ..., Cancelled };
//   const EnumTable<JobStatus>& enum_table(JobStatus);   // found by argument lookup
//
// and defining the table once in a source file:
//
//   const EnumTable<JobStatus>& enum_table(JobStatus) {
//     static const EnumTable<JobStatus> t{"job status", {{JobStatus::Preparing, "preparing"}, ...}};
//     return t;
//   }
//
// Then enum_name(), parse_enum<E>(), find_enum<E>() and enum_names<E>() work for it,
// fmt formats it by name ("{}"), and nlohmann::json converts it to and from its name
// (an unknown name is an error, never a default value). Tables are immutable after
// their first use; everything here is thread-safe.
#pragma once

#include <fmt/format.h>

#include <concepts>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"

namespace mk {

template <typename E>
struct EnumTable {
  std::string what;  // what a value is, for messages: "job status"
  std::vector<std::pair<E, std::string>> entries;
};

template <typename E>
concept NamedEnum = std::is_enum_v<E> && requires(E e) {
  { enum_table(e) } -> std::same_as<const EnumTable<E>&>;
};

// The value's name. Every value of a NamedEnum has one (a missing entry is a bug that
// the enum's unit test catches), so this never fails for a value the code created.
template <NamedEnum E>
const std::string& enum_name(E e) {
  const auto& t = enum_table(E{});
  for (const auto& [v, name] : t.entries) {
    if (v == e) return name;
  }
  throw Error(fmt::format("{} #{} has no name: add it to its enum_table", t.what, static_cast<int>(e)));
}

template <NamedEnum E>
std::optional<E> find_enum(std::string_view name) {
  for (const auto& [v, n] : enum_table(E{}).entries) {
    if (n == name) return v;
  }
  return std::nullopt;
}

// Every name, in declaration order (for OpenAPI `enum` lists and messages).
template <NamedEnum E>
std::vector<std::string> enum_names() {
  std::vector<std::string> out;
  for (const auto& entry : enum_table(E{}).entries) out.push_back(entry.second);
  return out;
}

// "'<name>' is not a <what> (known: a, b, c)". The name is cut to 64 characters, so a
// hostile value cannot flood a log.
template <NamedEnum E>
std::string unknown_enum_message(std::string_view name) {
  return fmt::format("'{}' is not a {} (known: {})", name.substr(0, 64), enum_table(E{}).what,
                     fmt::join(enum_names<E>(), ", "));
}

// Throws mk::Error "<where>: " + unknown_enum_message() for a name that is not one.
template <NamedEnum E>
E parse_enum(std::string_view name, std::string_view where) {
  if (auto v = find_enum<E>(name)) return *v;
  throw Error(fmt::format("{}: {}", where, unknown_enum_message<E>(name)));
}

}  // namespace mk

template <mk::NamedEnum E>
struct fmt::formatter<E> : fmt::formatter<std::string_view> {
  auto format(E e, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(mk::enum_name(e), ctx);
  }
};

// JSON holds a NamedEnum as its name; reading an unknown name throws mk::Error.
template <mk::NamedEnum E>
struct nlohmann::adl_serializer<E> {
  static void to_json(nlohmann::json& j, E e) { j = mk::enum_name(e); }
  static void from_json(const nlohmann::json& j, E& e) {
    if (!j.is_string())
      throw mk::Error(fmt::format("expected a {} (a string), got {}", enum_table(E{}).what, j.dump()));
    e = mk::parse_enum<E>(j.get_ref<const std::string&>(), "JSON");
  }
};
