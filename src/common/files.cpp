#include "common/files.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"

namespace mk {
namespace {

// Writes all of `data`; false with errno set on failure.
bool write_all(int fd, std::string_view data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return false;
    }
    off += static_cast<size_t>(n);
  }
  return true;
}

// Fills the temporary file `fd`: content, mode, owner, then fsync. Returns the failed
// step, or nullptr.
const char* fill(int fd, std::string_view content, const PrivateFileOptions& o) {
  if (!write_all(fd, content)) return "write";
  if (::fchmod(fd, o.mode) != 0) return "chmod";
  if ((o.uid || o.gid) && ::fchown(fd, o.uid.value_or(static_cast<uid_t>(-1)), o.gid.value_or(static_cast<gid_t>(-1))) != 0) {
    return "chown";
  }
  if (::fsync(fd) != 0) return "fsync";
  return nullptr;
}

}  // namespace

std::string parent_directory(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

void fsync_directory(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Error(fmt::format("cannot open directory {} to make it durable: {}", dir, std::strerror(errno)));
  int r = ::fsync(fd);
  int e = errno;
  ::close(fd);
  if (r != 0) throw Error(fmt::format("fsync of directory {} failed: {}", dir, std::strerror(e)));
}

void write_private_file(const std::string& path, std::string_view content, const PrivateFileOptions& options) {
  std::string tmp = path + ".tmp-XXXXXX";
  int fd = ::mkostemp(tmp.data(), O_CLOEXEC);  // mode 0600, created exclusively
  if (fd < 0) throw Error(fmt::format("cannot write {}: cannot create a temporary file next to it: {}", path,
                                      std::strerror(errno)));
  const char* failed = fill(fd, content, options);
  int e = errno;
  if (::close(fd) != 0 && !failed) {
    failed = "close";
    e = errno;
  }
  if (!failed && ::rename(tmp.c_str(), path.c_str()) != 0) {
    failed = "rename";
    e = errno;
  }
  if (failed) {
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write {}: {} failed: {}", path, failed, std::strerror(e)));
  }
  try {
    fsync_directory(parent_directory(path));
  } catch (const Error& d) {
    throw Error(fmt::format("{} was written, but may not survive a crash: {}", path, d.what()));
  }
}

}  // namespace mk
