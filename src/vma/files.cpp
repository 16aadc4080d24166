#include "vma/files.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/log.h"

namespace mk::vma {

std::string read_secret_file(const std::string& path, const std::string& what) {
  std::ifstream in(path);
  if (!in) throw UsageError(fmt::format("{}: cannot read {}: {}", what, path, std::strerror(errno)));
  std::string line;
  std::getline(in, line);
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  if (line.empty()) throw UsageError(fmt::format("{}: {} is empty", what, path));
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
    log::warn("{}: {} can be read by other users (mode {:o}); make it 0600", what, path, st.st_mode & 0777);
  }
  return line;
}

}  // namespace mk::vma
