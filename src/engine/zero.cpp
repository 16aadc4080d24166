#include "engine/zero.h"

#include <cstdint>
#include <cstring>

namespace mk::engine {

bool is_zero(const void* buf, size_t len) {
  const auto* p = static_cast<const unsigned char*>(buf);
  // Check a 16-byte head by hand; then the buffer is all zero iff it equals itself
  // shifted by 16 bytes, which memcmp checks with the C library's vector code. Random
  // data returns at the first bytes, so dense copies pay almost nothing for this.
  constexpr size_t head = 16;
  size_t n = len < head ? len : head;
  for (size_t i = 0; i < n; ++i) {
    if (p[i]) return false;
  }
  if (len <= head) return true;
  return std::memcmp(p, p + head, len - head) == 0;
}

}  // namespace mk::engine
