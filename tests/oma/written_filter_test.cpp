// The OMA's nbdkit written-bytes filter (src/oma/exports/written_filter) in a real
// nbdkit (file plugin, dir= mode) driven by real libnbd: bytes count once a flush made
// them durable (or at once with FUA), write-zeroes count like writes, counts survive a
// server restart and unflushed bytes lost in a crash do not count, and export names
// that could leave the counts directory are refused.
#include <gtest/gtest.h>
#include <libnbd.h>
#include <signal.h>
#include <time.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/units.h"
#include "support/files.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

constexpr const char* kExport = "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001-disk0";

struct NbdClose {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};
using Nbd = std::unique_ptr<nbd_handle, NbdClose>;

struct Filtered {
  mk::test::TempDir dir{"mk-written-filter"};
  std::string exports = dir.file("exports"), counts = dir.file("counts");
  std::unique_ptr<mk::test::NbdkitServer> server;

  // `lease_file`: the filter's lease-file= ("" = none).
  explicit Filtered(const std::string& lease_file = "") {
    std::filesystem::create_directories(exports);
    std::filesystem::create_directories(counts);
    mk::test::create_sparse_file(exports + "/" + kExport, 8 * MiB);
    std::vector<std::string> args = {"dir=" + exports, "written-dir=" + counts};
    if (!lease_file.empty()) args.push_back("lease-file=" + lease_file);
    server = std::make_unique<mk::test::NbdkitServer>(
        mk::test::NbdkitOptions{.args = args, .filters = {WRITTEN_FILTER}});
  }
  std::string uri(const std::string& name = kExport) const {
    return "nbd+unix:///" + name + "?socket=" + server->socket_path();
  }
  Nbd connect(const std::string& name = kExport) const {
    Nbd h(nbd_create());
    EXPECT_TRUE(h);
    if (nbd_connect_uri(h.get(), uri(name).c_str()) == -1) return nullptr;
    return h;
  }
  // The count file's content, or "none".
  std::string count() const {
    std::ifstream in(counts + "/" + kExport + ".written");
    if (!in) return "none";
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};

void write(nbd_handle* h, size_t n, uint64_t offset, uint32_t flags = 0) {
  std::vector<char> buf(n, 'w');
  ASSERT_EQ(nbd_pwrite(h, buf.data(), n, offset, flags), 0) << nbd_get_error();
}

TEST(WrittenFilter, BytesCountOnceFlushedOrFua) {
  Filtered f;
  Nbd h = f.connect();
  ASSERT_TRUE(h) << nbd_get_error() << "\n" << f.server->log();
  write(h.get(), 64 * KiB, 0);
  EXPECT_EQ(f.count(), "none");  // written, not yet durable
  ASSERT_EQ(nbd_flush(h.get(), 0), 0) << nbd_get_error();
  EXPECT_EQ(f.count(), std::to_string(64 * KiB) + "\n");

  ASSERT_EQ(nbd_zero(h.get(), 1 * MiB, 2 * MiB, 0), 0) << nbd_get_error();  // zeroes count as written
  EXPECT_EQ(f.count(), std::to_string(64 * KiB) + "\n");
  write(h.get(), 4 * KiB, 4 * MiB, LIBNBD_CMD_FLAG_FUA);  // durable at once, alone
  EXPECT_EQ(f.count(), std::to_string(68 * KiB) + "\n");
  ASSERT_EQ(nbd_flush(h.get(), 0), 0) << nbd_get_error();
  EXPECT_EQ(f.count(), std::to_string(68 * KiB + 1 * MiB) + "\n");
  ASSERT_EQ(nbd_flush(h.get(), 0), 0) << nbd_get_error();  // nothing new: nothing added
  EXPECT_EQ(f.count(), std::to_string(68 * KiB + 1 * MiB) + "\n");

  // A second connection counts its own flushed bytes into the same total.
  Nbd h2 = f.connect();
  ASSERT_TRUE(h2);
  write(h2.get(), 8 * KiB, 0);
  ASSERT_EQ(nbd_flush(h2.get(), 0), 0) << nbd_get_error();
  EXPECT_EQ(f.count(), std::to_string(76 * KiB + 1 * MiB) + "\n");
  ASSERT_EQ(nbd_trim(h2.get(), 64 * KiB, 0, 0), 0) << nbd_get_error();  // a trim writes nothing
  ASSERT_EQ(nbd_flush(h2.get(), 0), 0);
  EXPECT_EQ(f.count(), std::to_string(76 * KiB + 1 * MiB) + "\n");
}

TEST(WrittenFilter, CountsSurviveARestartAndUnflushedBytesLostInACrashDoNot) {
  Filtered f;
  {
    Nbd h = f.connect();
    ASSERT_TRUE(h) << nbd_get_error();
    write(h.get(), 128 * KiB, 0);
    ASSERT_EQ(nbd_flush(h.get(), 0), 0);
    write(h.get(), 32 * KiB, 1 * MiB);  // never flushed: the crash below loses it
    f.server->signal(SIGKILL);
  }
  f.server->restart();
  EXPECT_EQ(f.count(), std::to_string(128 * KiB) + "\n");
  Nbd h = f.connect();
  ASSERT_TRUE(h) << nbd_get_error();
  write(h.get(), 32 * KiB, 1 * MiB);  // the client writes the lost range again
  ASSERT_EQ(nbd_flush(h.get(), 0), 0);
  EXPECT_EQ(f.count(), std::to_string(160 * KiB) + "\n");
}

TEST(WrittenFilter, RefusesExportNamesThatCouldLeaveTheCountsDirectory) {
  Filtered f;
  std::filesystem::create_directories(f.exports + "/sub");
  mk::test::create_sparse_file(f.exports + "/sub/x", 1 * MiB);
  mk::test::create_sparse_file(f.exports + "/.hidden", 1 * MiB);
  for (const std::string name : {"sub%2Fx", ".hidden", ""}) {
    Nbd h(nbd_create());
    std::string u = f.uri(name);
    EXPECT_EQ(nbd_connect_uri(h.get(), u.c_str()), -1) << name;
  }
  EXPECT_NE(f.server->log().find("written filter: refusing export name"), std::string::npos) << f.server->log();
  EXPECT_TRUE(f.server->running());
  // Only the one valid export's files may ever appear in the counts directory.
  Nbd h = f.connect();
  ASSERT_TRUE(h);
  write(h.get(), 4 * KiB, 0, LIBNBD_CMD_FLAG_FUA);
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(f.counts)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{std::string(kExport) + ".lock", std::string(kExport) + ".written"}));
}

int64_t boottime_ns() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// lease-file= (an OMA node, issue 18): writes, write-zeroes and trims only before the
// deadline the file holds; a missing file or a passed deadline refuses them (on a
// connection opened before too), reads go on, and a later deadline allows them again.
TEST(WrittenFilter, WritesStopOnceTheLeaseDeadlineHasPassed) {
  mk::test::TempDir lease_dir{"mk-written-lease"};
  std::string lease = lease_dir.file("node-lease.deadline");
  auto set_deadline = [&](int64_t ns) {  // replaced atomically, as the OMA does
    std::ofstream(lease + ".tmp") << ns << "\n";
    std::filesystem::rename(lease + ".tmp", lease);
  };
  Filtered f(lease);
  Nbd h = f.connect();
  ASSERT_TRUE(h) << nbd_get_error() << "\n" << f.server->log();
  std::vector<char> buf(4 * KiB, 'w');
  EXPECT_EQ(nbd_pwrite(h.get(), buf.data(), buf.size(), 0, 0), -1) << "written with no lease file";

  // Renewed, then never again (frozen): writes until the deadline, none after it. (The
  // filter reads the file again only once the deadline it knows has passed: the OMA only
  // ever moves it forward while it holds the lease.)
  set_deadline(boottime_ns() + 500'000'000);
  EXPECT_EQ(nbd_pwrite(h.get(), buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_EQ(nbd_zero(h.get(), 64 * KiB, 0, 0), 0) << nbd_get_error();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(nbd_pwrite(h.get(), buf.data(), buf.size(), 0, 0), -1) << "written after the deadline";
  EXPECT_EQ(nbd_zero(h.get(), 64 * KiB, 0, 0), -1);
  EXPECT_EQ(nbd_trim(h.get(), 64 * KiB, 0, 0), -1);
  EXPECT_EQ(nbd_pread(h.get(), buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
  EXPECT_NE(f.server->log().find("lease deadline"), std::string::npos) << f.server->log();

  set_deadline(boottime_ns() + 60'000'000'000);  // the node renewed again
  EXPECT_EQ(nbd_pwrite(h.get(), buf.data(), buf.size(), 0, 0), 0) << nbd_get_error();
}

TEST(WrittenFilter, RefusesToStartWithoutAWritableCountsDirectory) {
  mk::test::TempDir dir{"mk-written-filter"};
  std::filesystem::create_directories(dir.file("exports"));
  EXPECT_THROW(mk::test::NbdkitServer(mk::test::NbdkitOptions{
                   .args = {"dir=" + dir.file("exports"), "written-dir=" + dir.file("missing")},
                   .filters = {WRITTEN_FILTER}}),
               std::exception);
}

}  // namespace
}  // namespace mk::oma
