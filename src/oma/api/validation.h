// Validation of JSON request bodies against a small declarative schema.
//
// A Schema lists an object's fields with their type and limits; validate() rejects
// unknown fields, wrong types, missing required fields, strings that are too long or
// hold NUL/control characters, and numbers out of range, throwing FieldError naming
// the field by its JSON path ("disks[1].capacity_bytes"). The same Schema produces the
// OpenAPI description of the body (to_openapi), so the document cannot drift from what
// the server accepts. parse_body() also bounds nesting depth. Free functions over
// immutable schemas; thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace mk::oma::api {

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
  enum class Type { String, Integer, Boolean, Array, Object };
  std::string name;
  Type type = Type::String;
  bool required = true;
  std::string description;
  size_t max_length = 255;                                 // strings: bytes; arrays: items
  int64_t min = std::numeric_limits<int64_t>::min();       // integers
  int64_t max = std::numeric_limits<int64_t>::max();
  std::vector<std::string> one_of;                         // strings: allowed values
  std::function<void(const std::string& value, const std::string& path)> check;  // strings: extra check
  const Schema* items = nullptr;                           // arrays of objects / objects
};

struct Schema {
  std::vector<Field> fields;
};

// Parses a request body: a JSON object nested at most 8 levels. Throws FieldError
// ("body") otherwise.
nlohmann::json parse_body(const std::string& body);

// Throws FieldError for the first problem found.
void validate(const nlohmann::json& value, const Schema& schema, const std::string& prefix = "");

nlohmann::json to_openapi(const Schema& schema);

}  // namespace mk::oma::api
