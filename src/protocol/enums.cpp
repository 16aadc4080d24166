#include "protocol/enums.h"

#include <fmt/format.h>

#include "common/json_schema.h"

namespace mk::protocol {

void throw_unknown_word(std::string_view what, std::string_view word, const std::vector<std::string>& allowed,
                        const std::string& field) {
  std::string list;
  for (const auto& w : allowed) list += (list.empty() ? "\"" : ", \"") + w + "\"";
  std::string shown(word.substr(0, 40));
  for (char& c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  }
  throw schema::FieldError(field, fmt::format("unknown {} \"{}\": must be one of {}", what, shown, list));
}

}  // namespace mk::protocol
