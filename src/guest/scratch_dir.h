// A private working directory for one guest operation (overlays, domain XML, serial
// console, logs), removed with everything in it when the ScratchDir is destroyed.
// Created under `parent` when given, else $TMPDIR (default /var/tmp: overlays of converted
// guests can be hundreds of MiB, too large for a tmpfs /tmp). Not thread-safe; one owner.
#pragma once

#include <string>

namespace mk::guest {

class ScratchDir {
 public:
  explicit ScratchDir(const std::string& purpose, const std::string& parent = "");  // throws mk::Error
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace mk::guest
