// Unit tests for src/common/files.h: write_private_file's content, mode, owner, atomic
// replacement, and its errors.
#include "common/files.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "common/error.h"
#include "in_child.h"
#include "unit_temp_dir.h"

namespace mk {
namespace {

namespace fs = std::filesystem;

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Names in `dir` other than `keep`: temporary files left behind.
std::vector<std::string> others(const fs::path& dir, const std::string& keep) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename() != keep) names.push_back(e.path().filename().string());
  }
  return names;
}

TEST(UnitPrivateFile, CreatesTheFileWithTheContentAndMode0600) {
  unit::TempDir dir;
  std::string path = dir.file("token");
  mode_t old = ::umask(0);  // a permissive umask must not widen the mode
  write_private_file(path, std::string("secret\0with a NUL\n", 18));
  ::umask(old);
  EXPECT_EQ(unit::read_all(path), std::string("secret\0with a NUL\n", 18));
  EXPECT_EQ(mode_of(path), 0600);
  EXPECT_TRUE(others(dir.path(), "token").empty());
}

TEST(UnitPrivateFile, ReplacesAnExistingFileAndItsMode) {
  unit::TempDir dir;
  std::string path = dir.file("state.json");
  unit::write_all(path, "old content that is longer than the new one");
  ::chmod(path.c_str(), 0644);
  write_private_file(path, "new");
  EXPECT_EQ(unit::read_all(path), "new");
  EXPECT_EQ(mode_of(path), 0600);
  EXPECT_TRUE(others(dir.path(), "state.json").empty());
}

TEST(UnitPrivateFile, EmptyAndLargeContent) {
  unit::TempDir dir;
  write_private_file(dir.file("empty"), "");
  EXPECT_EQ(fs::file_size(dir.file("empty")), 0u);
  std::string big(8 << 20, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i >> 12);
  write_private_file(dir.file("big"), big);
  EXPECT_EQ(unit::read_all(dir.file("big")), big);
}

TEST(UnitPrivateFile, ModeOption) {
  unit::TempDir dir;
  PrivateFileOptions options;
  options.mode = 0640;
  write_private_file(dir.file("config"), "x", options);
  EXPECT_EQ(mode_of(dir.file("config")), 0640);
}

TEST(UnitPrivateFile, OwnerOption) {
  if (::geteuid() != 0) GTEST_SKIP() << "changing a file's owner needs root";
  unit::TempDir dir;
  std::string path = dir.file("authorized_keys");
  PrivateFileOptions options;
  options.uid = 65534;
  options.gid = 65534;
  write_private_file(path, "ssh-ed25519 AAAA\n", options);
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 65534u);
  EXPECT_EQ(st.st_gid, 65534u);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
}

// A reader that opens the file while it is being replaced again and again sees one of
// the two contents whole, never a mixture, a short file or no file.
TEST(UnitPrivateFile, ReplacementIsAtomicForReaders) {
  unit::TempDir dir;
  std::string path = dir.file("record");
  const std::string a(256 << 10, 'a'), b(192 << 10, 'b');
  write_private_file(path, a);
  std::atomic<bool> done{false};
  std::atomic<int> torn{0}, reads{0};
  std::thread reader([&] {
    while (!done) {
      std::string seen = unit::read_all(path);
      if (seen != a && seen != b) ++torn;
      ++reads;
    }
  });
  for (int i = 0; i < 300 || reads < 100; ++i) write_private_file(path, i % 2 ? a : b);
  done = true;
  reader.join();
  EXPECT_EQ(torn.load(), 0) << "of " << reads.load() << " reads";
  EXPECT_TRUE(others(dir.path(), "record").empty());
}

TEST(UnitPrivateFile, MissingDirectoryNamesThePath) {
  unit::TempDir dir;
  std::string path = dir.file("no/such/dir/file");
  try {
    write_private_file(path, "x");
    FAIL() << "wrote into a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

// The destination is a directory: the rename fails, and no temporary file is left.
TEST(UnitPrivateFile, FailedRenameLeavesNoTemporaryFile) {
  unit::TempDir dir;
  fs::create_directory(dir.file("taken"));
  fs::create_directory(dir.file("taken/inside"));
  try {
    write_private_file(dir.file("taken"), "x");
    FAIL() << "replaced a directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("rename"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir.file("taken")), std::string::npos) << e.what();
  }
  EXPECT_TRUE(others(dir.path(), "taken").empty());
}

TEST(UnitPrivateFile, DirectoryFsyncErrorNamesTheDirectory) {
  unit::TempDir dir;
  try {
    fsync_directory(dir.file("missing"));
    FAIL() << "synced a missing directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.file("missing")), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(fsync_directory(dir.path().string()));
}

// In a directory the writer may enter and write but not read (mode 0333), the file is
// replaced but the directory cannot be opened for its fsync: the error says so and names
// both the file and the directory. Run in a child process that is not root (root may
// open any directory).
TEST(UnitPrivateFile, UnsyncableDirectoryIsReportedWithItsPath) {
  unit::TempDir dir;
  ::chmod(dir.path().c_str(), 0711);
  std::string sub = dir.file("write-only");
  fs::create_directory(sub);
  ::chmod(sub.c_str(), 0333);
  std::string path = sub + "/file";
  std::string message = unit::in_child([&] {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) return std::string("cannot drop root");
    try {
      write_private_file(path, "content");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  });
  ::chmod(sub.c_str(), 0700);
  EXPECT_NE(message.find("directory " + sub), std::string::npos) << message;
  EXPECT_NE(message.find(path + " was written"), std::string::npos) << message;
  EXPECT_EQ(unit::read_all(path), "content");  // replaced, only its durability is in doubt
}

TEST(UnitPrivateFile, ParentDirectory) {
  EXPECT_EQ(parent_directory("/a/b/c"), "/a/b");
  EXPECT_EQ(parent_directory("/c"), "/");
  EXPECT_EQ(parent_directory("c"), ".");
  EXPECT_EQ(parent_directory("a/c"), "a");
}

}  // namespace
}  // namespace mk
