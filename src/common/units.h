// Byte sizes as operators type them ("4M", "256K", "1G") and as we print them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace mk {

constexpr uint64_t KiB = 1024;
constexpr uint64_t MiB = 1024 * KiB;
constexpr uint64_t GiB = 1024 * MiB;

// Parses "4096", "64K", "4M", "1G", "2T" (binary multiples, optional "iB"/"B", any case).
// Throws UsageError naming `what` on anything else or on overflow.
uint64_t parse_size(std::string_view text, std::string_view what);

// "1.5 GiB", "512.0 KiB", "17 B".
std::string format_bytes(uint64_t bytes);

}  // namespace mk
