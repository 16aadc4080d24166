// Small file helpers of the VMA: secrets read from files, random identifiers (private
// files are written with common/files.h). Free functions, thread-safe.
#pragma once

#include <string>

namespace mk::vma {

// The first line of a secret file (token, password), without trailing whitespace.
// Throws UsageError naming `what` when the file is missing, unreadable or empty; warns
// when others may read it.
std::string read_secret_file(const std::string& path, const std::string& what);

// A random version-4 UUID, lowercase.
std::string random_uuid();

// Lowercase 8-4-4-4-12 hexadecimal.
bool is_uuid(const std::string& s);

}  // namespace mk::vma
