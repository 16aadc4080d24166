// Small text helpers shared by the API clients (ASCII only; no locale).
#pragma once

#include <string>
#include <string_view>

namespace mk {

// `s` with ASCII letters in lower case.
inline std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

}  // namespace mk
