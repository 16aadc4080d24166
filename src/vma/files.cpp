#include "vma/files.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>

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

std::string random_uuid() {
  std::random_device rd;
  std::uniform_int_distribution<int> hex(0, 15);
  std::string out;
  for (int i = 0; i < 32; ++i) {
    if (i == 8 || i == 12 || i == 16 || i == 20) out += '-';
    int v = hex(rd);
    if (i == 12) v = 4;                 // version 4
    if (i == 16) v = 8 | (v & 3);       // variant 10xx
    out += "0123456789abcdef"[v];
  }
  return out;
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? s[i] != '-' : !std::isxdigit(static_cast<unsigned char>(s[i])) || std::isupper(static_cast<unsigned char>(s[i]))) {
      return false;
    }
  }
  return true;
}

}  // namespace mk::vma
