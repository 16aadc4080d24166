// Error types shared by every part of MigrateKit OSSEA.
//
// Errors are exceptions carrying a message an operator can act on: what failed, on
// which VM, disk or export, and what to do. UsageError means the input was wrong and
// nothing was changed yet (command-line tools exit with status 2 for it); every other
// Error is a failure while working (status 1).
#pragma once

#include <stdexcept>
#include <string>

namespace mk {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message) {}
};

}  // namespace mk
