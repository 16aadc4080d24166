// Self-tests of the fixtures: other suites trust them to report differences and to
// start real servers, so each is checked against a case where it must fail.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include "common/error.h"
#include "common/subprocess.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "support/net.h"
#include "support/temp_dir.h"

namespace mk::test {
namespace {

TEST(SupportFiles, FirstDifferenceNamesTheOffset) {
  TempDir dir;
  std::string a = dir.file("a"), b = dir.file("b");
  create_sparse_file(a, 3 * 1024 * 1024 + 7);
  write_random_at(a, 4096, 2 * 1024 * 1024, 1);
  create_sparse_file(b, file_size(a));
  write_at(b, 0, read_file(a));
  EXPECT_TRUE(files_identical(a, b));
  EXPECT_EQ(sha256_file(a), sha256_file(b));
  std::string byte = read_at(b, 1234567, 1);
  byte[0] = static_cast<char>(byte[0] ^ 0x01);
  write_at(b, 1234567, byte);
  EXPECT_EQ(first_difference(a, b), 1234567u);
  EXPECT_FALSE(files_identical(a, b));
  EXPECT_NE(sha256_file(a), sha256_file(b));
}

TEST(SupportFiles, SparseImagesCompareByContentNotAllocation) {
  TempDir dir;
  std::string a = dir.file("a"), b = dir.file("b");
  const uint64_t size = 3ull << 30;  // sparse: costs no space
  create_sparse_file(a, size);
  create_sparse_file(b, size);
  fill_at(a, 1 << 30, 8192, '\0');  // allocated zeros in a, a hole in b: same content
  write_at(a, size - 1, "x");
  write_at(b, size - 1, "x");
  EXPECT_TRUE(files_identical(a, b));
  write_at(b, (2ull << 30) + 5, "y");
  EXPECT_EQ(first_difference(a, b), (2ull << 30) + 5);
}

TEST(SupportFiles, Sha256OfKnownInput) {
  TempDir dir;
  write_at(dir.file("abc"), 0, "abc");
  EXPECT_EQ(sha256_file(dir.file("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(SupportFiles, PskFileIsPrivateAndWellFormed) {
  TempDir dir;
  std::string path = make_psk_file(dir.file("keys.psk"), "mk");
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::string text = read_file(path);
  ASSERT_EQ(text.size(), 2 + 1 + 64 + 1);
  EXPECT_EQ(text.substr(0, 3), "mk:");
  EXPECT_EQ(text.find_first_not_of("0123456789abcdef", 3), text.size() - 1);
}

TEST(SupportNbdkit, ServesAFileOnUnixSocketAndTcp) {
  TempDir dir;
  create_sparse_file(dir.file("disk"), 1024 * 1024);
  for (bool tcp : {false, true}) {
    NbdkitServer server({.plugin = "file", .args = {"file=" + dir.file("disk")}, .tcp = tcp});
    std::string out;
    ASSERT_EQ(mk::run_capture({"nbdinfo", "--size", server.uri()}, out), 0) << server.uri() << "\n" << server.log();
    EXPECT_EQ(out, "1048576\n");
    pid_t pid = server.pid();
    server.stop();
    EXPECT_FALSE(server.running());
    EXPECT_EQ(::kill(pid, 0), -1);  // reaped: the PID no longer exists
  }
}

TEST(SupportNbdkit, AServerThatCannotStartIsReportedWithItsLog) {
  try {
    NbdkitServer server({.plugin = "file", .args = {"file=/nonexistent/mk-test/disk"}});
    FAIL() << "nbdkit started on a missing file";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("nbdkit"), std::string::npos) << msg;
    EXPECT_NE(msg.find("exited"), std::string::npos) << msg;
    EXPECT_NE(msg.find("/nonexistent/mk-test/disk"), std::string::npos) << msg;
  }
}

TEST(SupportRunner, CapturesExitCodeAndBothStreams) {
  RunResult r = run_migratekit({"copy", "nbd+unix:///?socket=/nonexistent/mk-test/sock"});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_FALSE(r.err.empty());
  r = run_migratekit({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("copy"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mk::test
