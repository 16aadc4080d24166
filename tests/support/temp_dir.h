// TempDir: a private temporary directory for one test, removed with everything in it
// when the TempDir is destroyed.
//
// Created with mkdtemp(3) under $TMPDIR (or /tmp), mode 0700, so parallel tests and
// repeated runs never share files. The TempDir owns the directory and its contents.
// Not thread-safe; one owner.
#pragma once

#include <string>

namespace mk::test {

class TempDir {
 public:
  // `prefix` names the directory for humans reading /tmp ("mk-copy-XXXXXX").
  explicit TempDir(const std::string& prefix = "mk-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + name. `name` is a fixed name chosen by the test, never user input.
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace mk::test
