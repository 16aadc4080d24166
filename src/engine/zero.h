// Exact all-zero test for copy buffers. Every byte is examined (never sampled): a
// buffer is written as NBD write-zeroes only when it truly holds nothing but zeros.
#pragma once

#include <cstddef>

namespace mk::engine {

bool is_zero(const void* buf, size_t len);

}  // namespace mk::engine
