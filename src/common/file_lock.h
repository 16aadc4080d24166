// FileLock: an exclusive advisory lock (flock) on a file, held while the object lives and
// released by the kernel when the process dies, however it dies; never inherited by
// child processes. For "one process at a time uses this directory". Not thread-safe;
// movable (a moved-to lock releases the lock it held), not copyable.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace mk {

class FileLock {
 public:
  // Creates `path` (mode 0600) if needed and takes the lock without waiting: nullopt if
  // another process holds it. Throws mk::Error naming `path` if it cannot be opened.
  static std::optional<FileLock> try_acquire(const std::string& path);
  FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  FileLock& operator=(FileLock&& other) noexcept;
  ~FileLock();

 private:
  explicit FileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace mk
