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
  std::string_view suffix = text.substr(i);
  uint64_t mult = 1;
  if (!suffix.empty()) {
    switch (std::toupper(static_cast<unsigned char>(suffix[0]))) {
      case 'K': mult = KiB; break;
      case 'M': mult = MiB; break;
      case 'G': mult = GiB; break;
      case 'T': mult = 1024 * GiB; break;
      case 'B': mult = 1; break;
      default: throw bad();
    }
    std::string_view rest = suffix.substr(1);
    if (suffix[0] != 'B' && suffix[0] != 'b' && !(rest.empty() || rest == "iB" || rest == "B")) throw bad();
    if ((suffix[0] == 'B' || suffix[0] == 'b') && !rest.empty()) throw bad();
  }
  if (value > std::numeric_limits<uint64_t>::max() / mult) throw bad();
  return value * mult;
}

std::string format_bytes(uint64_t bytes) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024.0 && u < 5) {
    v /= 1024.0;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", bytes);
  return fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace mk
