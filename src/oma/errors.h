// Error kinds the OMA distinguishes so that the API can answer with the right status:
// NotFound (404), Conflict (409, e.g. a second active job for a VM) and, from
// common/error.h, UsageError (400, bad input; nothing changed) and Error (500).
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "common/error.h"

namespace mk::oma {

class NotFound : public mk::Error {
 public:
  using mk::Error::Error;
};

class Conflict : public mk::Error {
 public:
  using mk::Error::Error;
};

// The value of a lookup that must have found something, else NotFound(message).
template <typename T>
T found(std::optional<T> value, const std::string& message) {
  if (!value) throw NotFound(message);
  return std::move(*value);
}

}  // namespace mk::oma
