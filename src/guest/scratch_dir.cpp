#include "guest/scratch_dir.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "common/error.h"

namespace mk::guest {

ScratchDir::ScratchDir(const std::string& purpose, const std::string& parent) {
  const char* tmp = std::getenv("TMPDIR");
  const std::string base = !parent.empty() ? parent : std::string(tmp && *tmp ? tmp : "/var/tmp");
  std::string pattern = base + "/mk-guest-" + purpose + "-XXXXXX";
  if (!::mkdtemp(pattern.data())) {
    throw Error("cannot create a scratch directory " + pattern + ": " + std::strerror(errno) +
                " (check TMPDIR and its free space)");
  }
  path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);  // best effort: nothing to report to in a destructor
}

}  // namespace mk::guest
