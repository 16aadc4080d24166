#include "common/json_schema.h"

#include <fmt/format.h>

#include <algorithm>

namespace mk::schema {
namespace {

using nlohmann::json;

std::string join(const std::string& prefix, const std::string& name) { return prefix.empty() ? name : prefix + "." + name; }

const char* type_name(Field::Type t) {
  switch (t) {
    case Field::Type::String: return "string";
    case Field::Type::Integer: return "integer";
    case Field::Type::Number: return "number";
    case Field::Type::Boolean: return "boolean";
    case Field::Type::Array: return "array";
    case Field::Type::Object: return "object";
  }
  return "?";
}

void check_string(const std::string& s, const Field& f, const std::string& path) {
  if (s.size() > f.max_length) throw FieldError(path, fmt::format("longer than {} bytes", f.max_length));
  for (unsigned char c : s) {
    if (f.multiline && (c == '\n' || c == '\r')) continue;
    if (c < 0x20 || c == 0x7f) {
      throw FieldError(path, f.multiline ? "must not contain NUL or control characters other than line breaks"
                                         : "must not contain NUL, line breaks or control characters");
    }
  }
  if (!f.one_of.empty() && std::find(f.one_of.begin(), f.one_of.end(), s) == f.one_of.end()) {
    std::string allowed;
    for (const auto& v : f.one_of) allowed += (allowed.empty() ? "" : ", ") + ("\"" + v + "\"");
    throw FieldError(path, "must be one of " + allowed);
  }
  if (f.check) f.check(s, path);
}

void check_value(const json& v, const Field& f, const std::string& path) {
  switch (f.type) {
    case Field::Type::String:
      if (!v.is_string()) throw FieldError(path, "must be a string");
      check_string(v.get_ref<const std::string&>(), f, path);
      break;
    case Field::Type::Integer: {
      if (!v.is_number_integer()) throw FieldError(path, "must be an integer");
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw FieldError(path, "is too large");
      int64_t n = v.get<int64_t>();
      if (n < f.min || n > f.max) throw FieldError(path, fmt::format("must be between {} and {}", f.min, f.max));
      break;
    }
    case Field::Type::Number:
      if (!v.is_number()) throw FieldError(path, "must be a number");
      break;
    case Field::Type::Boolean:
      if (!v.is_boolean()) throw FieldError(path, "must be true or false");
      break;
    case Field::Type::Array:
      if (!v.is_array()) throw FieldError(path, "must be an array");
      if (v.size() > f.max_length) throw FieldError(path, fmt::format("has more than {} items", f.max_length));
      for (size_t i = 0; i < v.size(); ++i) {
        std::string at = fmt::format("{}[{}]", path, i);
        if (f.element) check_value(v[i], *f.element, at);
        else validate(v[i], *f.items, at);
      }
      break;
    case Field::Type::Object:
      validate(v, *f.items, path);
      break;
  }
}

}  // namespace

json parse_object(const std::string& text, const std::string& what) {
  bool too_deep = false;
  json j = json::parse(
      text,
      [&](int depth, json::parse_event_t, json&) {
        if (depth > 8) too_deep = true;
        return !too_deep;
      },
      false);
  if (too_deep) throw FieldError(what, "nested too deeply");
  if (j.is_discarded()) throw FieldError(what, "is not valid JSON");
  if (!j.is_object()) throw FieldError(what, "must be a JSON object");
  return j;
}

void validate(const json& value, const Schema& schema, const std::string& prefix) {
  std::string where = prefix.empty() ? "body" : prefix;
  if (!value.is_object()) throw FieldError(where, "must be a JSON object");
  for (const auto& [key, v] : value.items()) {
    bool known = std::any_of(schema.fields.begin(), schema.fields.end(), [&](const Field& f) { return f.name == key; });
    if (!known) {
      // The unknown name is echoed back sanitised and short: it is attacker-controlled.
      std::string shown;
      for (char c : key.substr(0, 40)) shown += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
      throw FieldError(join(prefix, shown), "unknown field");
    }
  }
  for (const auto& f : schema.fields) {
    std::string path = join(prefix, f.name);
    auto it = value.find(f.name);
    if (it != value.end() && it->is_null() && f.nullable) continue;
    if (it == value.end() || it->is_null()) {
      if (f.required) throw FieldError(path, fmt::format("is required ({})", type_name(f.type)));
      continue;
    }
    check_value(*it, f, path);
  }
}

namespace {

json field_openapi(const Field& f) {
  json p = {{"type", type_name(f.type)}};
  if (!f.description.empty()) p["description"] = f.description;
  if (f.type == Field::Type::String) p["maxLength"] = f.max_length;
  if (f.type == Field::Type::Integer) {
    if (f.min != std::numeric_limits<int64_t>::min()) p["minimum"] = f.min;
    if (f.max != std::numeric_limits<int64_t>::max()) p["maximum"] = f.max;
  }
  if (!f.one_of.empty()) p["enum"] = f.one_of;
  if (f.type == Field::Type::Array) {
    p["maxItems"] = f.max_length;
    p["items"] = f.element ? field_openapi(*f.element) : to_openapi(*f.items);
  }
  if (f.type == Field::Type::Object) p = to_openapi(*f.items);
  if (f.nullable) p["nullable"] = true;
  if (!f.example.is_null()) p["example"] = f.example;
  return p;
}

}  // namespace

json to_openapi(const Schema& schema) {
  json props = json::object();
  json required = json::array();
  for (const auto& f : schema.fields) {
    props[f.name] = field_openapi(f);
    if (f.required) required.push_back(f.name);
  }
  json s = {{"type", "object"}, {"additionalProperties", false}, {"properties", props}};
  if (!required.empty()) s["required"] = required;
  if (!schema.description.empty()) s["description"] = schema.description;
  return s;
}

}  // namespace mk::schema
