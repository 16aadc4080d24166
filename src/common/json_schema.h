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
// Schemas are immutable values, usually namespace-scope constants that refer to each
// other by pointer (the pointee must outlive the referrer). Free functions; thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
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
  bool multiline = false;                                  // strings: LF and CR allowed (PEM text)
};

struct Schema {
  std::vector<Field> fields = {};
  std::string name = {};         // OpenAPI component name ("Vm"); empty: described inline
  std::string description = {};
};

// Parses a JSON object nested at most 8 levels. Throws FieldError(`what`) otherwise.
nlohmann::json parse_object(const std::string& text, const std::string& what = "body");

// Throws FieldError for the first problem found.
void validate(const nlohmann::json& value, const Schema& schema, const std::string& prefix = "");

// The OpenAPI 3 schema object for `schema` (inline; nested schemas inline too).
nlohmann::json to_openapi(const Schema& schema);

}  // namespace mk::schema
