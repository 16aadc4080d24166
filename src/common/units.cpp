#include "common/units.h"

#include <fmt/format.h>

#include <cctype>
#include <limits>

#include "common/error.h"

namespace mk {

uint64_t parse_size(std::string_view text, std::string_view what) {
  auto bad = [&] {
    return UsageError(fmt::format("{}: '{}' is not a size (examples: 65536, 64K, 4M, 1G)", what, text));
  };
  size_t i = 0;
  uint64_t value = 0;
  if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0]))) throw bad();
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
    uint64_t digit = text[i] - '0';
    if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) throw bad();
    value = value * 10 + digit;
    ++i;
  }
  std::string suffix;
  for (char ch : text.substr(i)) suffix += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  uint64_t mult = 1;
  if (!suffix.empty() && suffix != "b") {
    switch (suffix[0]) {
      case 'k': mult = KiB; break;
      case 'm': mult = MiB; break;
      case 'g': mult = GiB; break;
      case 't': mult = 1024 * GiB; break;
      default: throw bad();
    }
    std::string rest = suffix.substr(1);
    if (!(rest.empty() || rest == "b" || rest == "ib")) throw bad();
  }
  if (value > std::numeric_limits<uint64_t>::max() / mult) throw bad();
  return value * mult;
}

std::string format_bytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  // Compare after rounding to one decimal, so that 1 MiB - 1 prints as "1.0 MiB".
  while (v >= 1023.95 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace mk
