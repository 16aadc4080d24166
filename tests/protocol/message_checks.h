// Helpers of the protocol tests: every field of a valid message, removed, mistyped or
// joined by an unknown sibling, must be refused by a FieldError that names it.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "common/json_schema.h"

namespace mk::protocol::test {

using Decoder = std::function<void(const nlohmann::json&)>;

// The field a decoder refuses `j` for; "" when it accepts it.
inline std::string refused_field(const Decoder& decode, const nlohmann::json& j) {
  try {
    decode(j);
  } catch (const schema::FieldError& e) {
    return e.field();
  }
  return "";
}

// A value of another JSON type than `v`.
inline nlohmann::json mistyped(const nlohmann::json& v) {
  if (v.is_string()) return 12345;
  if (v.is_object() || v.is_array()) return "not a container";
  return nlohmann::json::object();  // numbers, booleans, null
}

// Walks every member of every object in `valid` (nested objects and array elements
// included): mistyped, then removed unless `optional` lists its path, then joined by
// an unknown member. Each change must be refused naming the member's path.
inline void expect_every_field_checked(const Decoder& decode, const nlohmann::json& valid,
                                       const std::set<std::string>& optional = {}) {
  ASSERT_EQ(refused_field(decode, valid), "") << "the sample itself is refused: " << valid.dump();
  std::function<void(const nlohmann::json::json_pointer&, const std::string&)> walk =
      [&](const nlohmann::json::json_pointer& at, const std::string& path) {
        const nlohmann::json& node = valid[at];
        if (node.is_array()) {
          for (size_t i = 0; i < node.size(); ++i) walk(at / i, path + "[" + std::to_string(i) + "]");
          return;
        }
        if (!node.is_object()) return;
        for (const auto& [key, value] : node.items()) {
          std::string p = path.empty() ? key : path + "." + key;
          nlohmann::json changed = valid;
          changed[at / key] = mistyped(value);
          EXPECT_EQ(refused_field(decode, changed), p) << "mistyped " << p << " in " << changed.dump();
          if (!optional.count(p)) {
            changed = valid;
            changed[at].erase(key);
            EXPECT_EQ(refused_field(decode, changed), p) << "without " << p;
          }
          walk(at / key, p);
        }
        nlohmann::json extra = valid;
        extra[at]["surplus"] = 1;
        std::string p = path.empty() ? "surplus" : path + ".surplus";
        EXPECT_EQ(refused_field(decode, extra), p) << "unknown member in " << (path.empty() ? "body" : path);
      };
  walk(nlohmann::json::json_pointer(), "");
}

}  // namespace mk::protocol::test
