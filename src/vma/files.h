// Small file helpers of the VMA: secrets read from files (private files are written
// with common/files.h). Free functions, thread-safe.
#pragma once

#include <string>

namespace mk::vma {

// The first line of a secret file (token, password), without trailing whitespace.
// Throws UsageError naming `what` when the file is missing, unreadable or empty; warns
// when others may read it.
std::string read_secret_file(const std::string& path, const std::string& what);

}  // namespace mk::vma
