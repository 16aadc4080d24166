// Small file helpers of the VMA: private files written atomically, secrets read from
// files. Free functions, thread-safe.
#pragma once

#include <string>

namespace mk::vma {

// Writes `content` to `path` with mode 0600: a temporary file in the same directory,
// fsync'd, then renamed over `path`, so readers see the old or the new content whole.
void write_private_file(const std::string& path, const std::string& content);

// The first line of a secret file (token, password), without trailing whitespace.
// Throws UsageError naming `what` when the file is missing, unreadable or empty; warns
// when others may read it.
std::string read_secret_file(const std::string& path, const std::string& what);

}  // namespace mk::vma
