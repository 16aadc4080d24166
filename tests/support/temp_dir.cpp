#include "support/temp_dir.h"

#include <fmt/format.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/error.h"

namespace mk::test {

TempDir::TempDir(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string root = base && *base ? base : "/tmp";
  std::string pattern = root + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) {
    throw Error(fmt::format("cannot create a temporary directory under {}: {} (check TMPDIR and free space)",
                            root, std::strerror(errno)));
  }
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;  // a destructor must not throw; a leftover directory is harmless
  std::filesystem::remove_all(path_, ec);
}

}  // namespace mk::test
