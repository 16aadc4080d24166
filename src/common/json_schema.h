// JsonSchema: validation of JSON documents against small declarative schemas, and their
// OpenAPI description.
//
// A Schema lists an object's fields with their type and limits; validate() rejects
// unknown fields, wrong types, missing required fields, strings that are too long or
// hold NUL/control characters (line breaks are allowed only in multiline fields), and
// numbers out of range, throwing FieldError naming the field by its JSON path
// ("disks[1].capacity_bytes"). The same Schema produces the OpenAPI description
// (to_openapi), so a document cannot drift from what the code accepts. The OMA's REST
// API and the OMA<->VMA protocol both declare their messages this way. parse_object()
// also bounds nesting depth.
//
// A schema describes either what a program reads (Direction::Request: every limit is
// enforced and documented) or what it writes (Direction::Reply: the shape — types,
// required and unknown fields, enums, integer ranges — without the string limits that
// guard input). Named schemas become OpenAPI components referred to by $ref; a schema
// with one_of alternatives matches a value that matches exactly one of them. example()
// builds a value from the fields' examples, so documents show examples that validate.
//
// Schemas are immutable values, usually namespace-scope constants that refer to each
// other by pointer (the pointee must outlive the referrer). Free functions; thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/error.h"

namespace mk::schema {

// A value that breaks a schema. field() is the JSON path ("body" for the whole value).
class FieldError : public mk::UsageError {
 public:
  FieldError(std::string field, const std::string& message)
      : mk::UsageError(field + ": " + message), field_(std::move(field)) {}
  const std::string& field() const { return field_; }

 private:
  std::string field_;
};

struct Schema;

struct Field {
  enum class Type { String, Integer, Number, Boolean, Array, Object };
  std::string name = {};
  Type type = Type::String;
  bool required = true;
  std::string description = {};
  size_t max_length = 255;                                 // strings: bytes; arrays: items
  int64_t min = std::numeric_limits<int64_t>::min();       // integers
  int64_t max = std::numeric_limits<int64_t>::max();
  std::vector<std::string> one_of = {};                    // strings: allowed values
  std::function<void(const std::string& value, const std::string& path)> check = {};  // strings: extra check
  const Schema* items = nullptr;                           // arrays of objects / objects
  const Field* element = nullptr;                          // arrays of scalars (name unused)
  bool nullable = false;                                   // null is a value (not "absent")
  nlohmann::json example = nullptr;                        // for the OpenAPI document
  // Strings: an ECMAScript regex for the document and for validators built from it.
  // validate() does not use it: `check` is the C++ side of the same rule (keep both).
  std::string pattern = {};
  // Objects: items == nullptr (and Type::Object) is an object of any content.
  bool multiline = false;                                  // strings: LF and CR allowed (PEM text)
};

struct Schema {
  std::vector<Field> fields = {};
  std::string name = {};         // OpenAPI component name ("Vm"); empty: described inline
  std::string description = {};
  // Non-empty: the value matches exactly one of these schemas (`fields` unused).
  std::vector<const Schema*> one_of = {};
};

enum class Direction { Request, Reply };

// Parses a JSON object nested at most 8 levels. Throws FieldError(`what`) otherwise.
nlohmann::json parse_object(const std::string& text, const std::string& what = "body");

// Throws FieldError for the first problem found.
void validate(const nlohmann::json& value, const Schema& schema, const std::string& prefix = "",
              Direction direction = Direction::Request);

// Checks one value against one field (a path or query parameter, say): throws
// FieldError(path) as validate() would for that field of an object.
void validate_field(const nlohmann::json& value, const Field& field, const std::string& path,
                    Direction direction = Direction::Request);

// The named schemas an OpenAPI document refers to (components/schemas). Collects each
// named schema the first time it is described; refuses (mk::Error) two different
// schemas of one name, or one schema described for both directions. Not thread-safe.
class Components {
 public:
  // {"$ref": "#/components/schemas/NAME"} for a named schema (described into schemas()
  // with everything it refers to), else the schema inline.
  nlohmann::json describe(const Schema& schema, Direction direction);
  // The OpenAPI schema object of one field (its type, limits, enum, nested schemas).
  nlohmann::json describe(const Field& field, Direction direction);
  const nlohmann::json& schemas() const { return schemas_; }

 private:
  friend nlohmann::json to_openapi(const Schema& schema, Direction direction);
  nlohmann::json inline_schema(const Schema& schema, Direction direction);
  bool inline_all_ = false;  // to_openapi(): no components, everything inline
  std::map<std::string, std::pair<const Schema*, Direction>> seen_;
  nlohmann::json schemas_ = nlohmann::json::object();
};

// The OpenAPI 3.0 schema object for `schema`, every nested schema inline.
nlohmann::json to_openapi(const Schema& schema, Direction direction = Direction::Request);

// A value of `schema` made of its fields' examples. A field without an example takes
// its first enum value, null when nullable, its minimum (or 0), false, an example item,
// or its nested schema's example; optional fields without an example are left out.
// Throws mk::Error naming the field when a string has no example and no enum.
nlohmann::json example(const Schema& schema);

}  // namespace mk::schema
