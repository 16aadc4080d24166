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

void check_string(const std::string& s, const Field& f, const std::string& path, Direction direction) {
  if (direction == Direction::Request) {
    if (s.size() > f.max_length) throw FieldError(path, fmt::format("longer than {} bytes", f.max_length));
    for (unsigned char c : s) {
      if (f.multiline && (c == '\n' || c == '\r')) continue;
      if (c < 0x20 || c == 0x7f) {
        throw FieldError(path, f.multiline ? "must not contain NUL or control characters other than line breaks"
                                           : "must not contain NUL, line breaks or control characters");
      }
    }
  }
  if (!f.one_of.empty() && std::find(f.one_of.begin(), f.one_of.end(), s) == f.one_of.end()) {
    std::string allowed;
    for (const auto& v : f.one_of) allowed += (allowed.empty() ? "" : ", ") + ("\"" + v + "\"");
    throw FieldError(path, "must be one of " + allowed);
  }
  if (f.check && direction == Direction::Request) f.check(s, path);
}

void check_value(const json& v, const Field& f, const std::string& path, Direction direction) {
  switch (f.type) {
    case Field::Type::String:
      if (!v.is_string()) throw FieldError(path, "must be a string");
      check_string(v.get_ref<const std::string&>(), f, path, direction);
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
      if (direction == Direction::Request && v.size() > f.max_length)
        throw FieldError(path, fmt::format("has more than {} items", f.max_length));
      for (size_t i = 0; i < v.size(); ++i) {
        std::string at = fmt::format("{}[{}]", path, i);
        if (f.element) check_value(v[i], *f.element, at, direction);
        else validate(v[i], *f.items, at, direction);
      }
      break;
    case Field::Type::Object:
      if (f.items) validate(v, *f.items, path, direction);
      else if (!v.is_object()) throw FieldError(path, "must be a JSON object");
      break;
  }
}

std::string schema_label(const Schema& s, size_t i) { return s.name.empty() ? fmt::format("#{}", i + 1) : s.name; }

// Exactly one alternative must match.
void validate_one_of(const json& value, const Schema& schema, const std::string& prefix, Direction direction) {
  std::vector<std::string> matched, problems;
  for (size_t i = 0; i < schema.one_of.size(); ++i) {
    try {
      validate(value, *schema.one_of[i], prefix, direction);
      matched.push_back(schema_label(*schema.one_of[i], i));
    } catch (const FieldError& e) {
      problems.push_back(schema_label(*schema.one_of[i], i) + ": " + e.what());
    }
  }
  std::string where = prefix.empty() ? "body" : prefix;
  if (matched.size() == 1) return;
  std::string list;
  for (const auto& m : matched.empty() ? problems : matched) list += (list.empty() ? "" : "; ") + m;
  throw FieldError(where, matched.empty() ? "matches none of the alternatives (" + list + ")"
                                          : "matches more than one alternative (" + list + ")");
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

void validate(const json& value, const Schema& schema, const std::string& prefix, Direction direction) {
  if (!schema.one_of.empty()) return validate_one_of(value, schema, prefix, direction);
  std::string where = prefix.empty() ? "body" : prefix;
  if (!value.is_object()) throw FieldError(where, "must be a JSON object");
  for (const auto& item : value.items()) {
    const std::string& key = item.key();  // not a structured binding: clang 14 (fuzz build) cannot capture one
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
    check_value(*it, f, path, direction);
  }
}

json Components::describe(const Schema& schema, Direction direction) {
  if (schema.name.empty() || inline_all_) return inline_schema(schema, direction);
  json ref = {{"$ref", "#/components/schemas/" + schema.name}};
  auto [it, fresh] = seen_.try_emplace(schema.name, &schema, direction);
  if (!fresh) {
    if (it->second.first != &schema)
      throw Error(fmt::format("two different schemas are named {}: rename one", schema.name));
    if (it->second.second != direction)
      throw Error(fmt::format("schema {} is used both for requests and for replies: declare one of each", schema.name));
    return ref;
  }
  schemas_[schema.name] = inline_schema(schema, direction);
  return ref;
}

json Components::inline_schema(const Schema& schema, Direction direction) {
  json s;
  if (!schema.one_of.empty()) {
    s["oneOf"] = json::array();
    for (const Schema* alt : schema.one_of) s["oneOf"].push_back(describe(*alt, direction));
  } else {
    json props = json::object();
    json required = json::array();
    for (const auto& f : schema.fields) {
      props[f.name] = describe(f, direction);
      if (f.required) required.push_back(f.name);
    }
    s = {{"type", "object"}, {"additionalProperties", false}, {"properties", props}};
    if (!required.empty()) s["required"] = required;
  }
  if (!schema.description.empty()) s["description"] = schema.description;
  return s;
}

json Components::describe(const Field& f, Direction direction) {
  if (f.type == Field::Type::Object && f.items) {
    // A $ref takes no siblings in OpenAPI 3.0: a nullable object is described inline.
    if (!f.nullable) return describe(*f.items, direction);
    json p = inline_schema(*f.items, direction);
    p["nullable"] = true;
    if (!f.description.empty()) p["description"] = f.description;
    return p;
  }
  json p = {{"type", type_name(f.type)}};
  if (!f.description.empty()) p["description"] = f.description;
  if (f.type == Field::Type::String && direction == Direction::Request) p["maxLength"] = f.max_length;
  if (!f.pattern.empty()) p["pattern"] = f.pattern;
  if (f.type == Field::Type::Integer) {
    if (f.min != std::numeric_limits<int64_t>::min()) p["minimum"] = f.min;
    if (f.max != std::numeric_limits<int64_t>::max()) p["maximum"] = f.max;
  }
  if (!f.one_of.empty()) p["enum"] = f.one_of;
  if (f.type == Field::Type::Array) {
    if (direction == Direction::Request) p["maxItems"] = f.max_length;
    p["items"] = f.element ? describe(*f.element, direction) : describe(*f.items, direction);
  }
  if (f.nullable) p["nullable"] = true;
  if (!f.example.is_null()) p["example"] = f.example;
  return p;
}

json to_openapi(const Schema& schema, Direction direction) {
  Components all_inline;
  all_inline.inline_all_ = true;
  return all_inline.describe(schema, direction);
}

void validate_field(const json& value, const Field& field, const std::string& path, Direction direction) {
  check_value(value, field, path, direction);
}

namespace {

json field_example(const Field& f) {
  if (!f.example.is_null()) return f.example;
  if (!f.one_of.empty()) return f.one_of.front();
  switch (f.type) {
    case Field::Type::Object:
      return f.items ? example(*f.items) : json::object();
    case Field::Type::Array:
      if (f.element) return json::array({field_example(*f.element)});
      return f.items ? json::array({example(*f.items)}) : json::array();
    default:
      break;
  }
  if (f.nullable) return nullptr;
  switch (f.type) {
    case Field::Type::Integer:
      return f.min != std::numeric_limits<int64_t>::min() ? f.min : std::min<int64_t>(0, f.max);
    case Field::Type::Number:
      return 0;
    case Field::Type::Boolean:
      return false;
    default:
      throw Error(fmt::format("field {} (a string) has no example: declare one", f.name.empty() ? "(item)" : f.name));
  }
}

}  // namespace

json example(const Schema& schema) {
  if (!schema.one_of.empty()) return example(*schema.one_of.front());
  json out = json::object();
  for (const auto& f : schema.fields) {
    if (!f.required && f.example.is_null()) continue;
    out[f.name] = field_example(f);
  }
  return out;
}

}  // namespace mk::schema
