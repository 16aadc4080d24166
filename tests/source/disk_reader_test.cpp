// DiskReader: the vddk command line (checked, no secret on it), a clear error when VDDK
// is absent, and the flat-file stand-in serving and stopping by PID.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "engine/nbd_connection.h"
#include "source/disk_reader.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::source {
namespace {

VddkParams params() {
  VddkParams p;
  p.server = "vcenter.example";
  p.user = "administrator@vsphere.local";
  p.password_file = "/etc/migratekit/vcenter.password";
  p.thumbprint = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD";
  p.vm_moref = "vm-42";
  p.snapshot_moref = "snapshot-7";
  p.file = "[datastore1] web01/web01.vmdk";
  return p;
}

TEST(DiskReader, VddkCommandLineCarriesTheSnapshotAndNoPassword) {
  auto argv = vddk_argv(params(), "/run/x/nbd.sock");
  auto has = [&](const std::string& a) { return std::find(argv.begin(), argv.end(), a) != argv.end(); };
  EXPECT_TRUE(has("vddk"));
  EXPECT_TRUE(has("--exit-with-parent"));
  EXPECT_TRUE(has("-r"));
  EXPECT_TRUE(has("vm=moref=vm-42"));
  EXPECT_TRUE(has("snapshot=snapshot-7"));
  EXPECT_TRUE(has("password=+/etc/migratekit/vcenter.password"));
  EXPECT_TRUE(has("file=[datastore1] web01/web01.vmdk"));
  EXPECT_TRUE(has("thumbprint=AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD"));
}

// A powered-off VM's pass without a snapshot: VDDK opens the VM's own disk.
TEST(DiskReader, VddkWithoutASnapshotGetsNoSnapshotParameter) {
  VddkParams p = params();
  p.snapshot_moref = "";
  auto argv = vddk_argv(p, "/run/x/nbd.sock");
  EXPECT_EQ(std::count_if(argv.begin(), argv.end(), [](auto& a) { return a.starts_with("snapshot="); }), 0);
  EXPECT_NE(std::find(argv.begin(), argv.end(), "file=[datastore1] web01/web01.vmdk"), argv.end());
  EXPECT_NE(std::find(argv.begin(), argv.end(), "vm=moref=vm-42"), argv.end());
}

TEST(DiskReader, VddkRunsBehindTheBlocksizeAndRetryFiltersAndGetsThePort) {
  VddkParams p = params();
  auto argv = vddk_argv(p, "/run/x/nbd.sock");
  auto at = [&](const std::string& a) { return std::find(argv.begin(), argv.end(), a) - argv.begin(); };
  long end = static_cast<long>(argv.size());
  ASSERT_LT(at("--filter=blocksize"), end);
  ASSERT_LT(at("--filter=retry"), end);
  EXPECT_LT(at("--filter=blocksize"), at("--filter=retry")) << "requests are split before they are retried";
  EXPECT_LT(at("--filter=retry"), at("vddk"));
  EXPECT_GT(at("maxdata=2M"), at("vddk"));
  EXPECT_LT(at("maxdata=2M"), end);
  EXPECT_EQ(std::count_if(argv.begin(), argv.end(), [](auto& a) { return a.starts_with("port="); }), 0)
      << "no port: VDDK's default (443)";
  p.port = 8443;
  argv = vddk_argv(p, "/s");
  EXPECT_LT(at("port=8443"), static_cast<long>(argv.size()));
  p.port = 70000;
  EXPECT_THROW(vddk_argv(p, "/s"), UsageError);
}

TEST(DiskReader, AReadRateAddsNbdkitsRateFilterInBitsPerSecond) {
  VddkParams p = params();
  auto plain = vddk_argv(p, "/s");
  EXPECT_EQ(std::count(plain.begin(), plain.end(), "--filter=rate"), 0);
  p.read_rate = 1000000;  // bytes per second
  auto argv = vddk_argv(p, "/run/x/nbd.sock");
  auto at = [&](const std::string& a) { return std::find(argv.begin(), argv.end(), a) - argv.begin(); };
  ASSERT_LT(at("--filter=rate"), static_cast<long>(argv.size()));
  EXPECT_LT(at("--filter=rate"), at("vddk")) << "a filter is named before the plugin";
  EXPECT_GT(at("rate=8000000"), at("vddk")) << "its parameter goes with the plugin's";
  EXPECT_LT(at("rate=8000000"), static_cast<long>(argv.size()));
}

TEST(DiskReader, VddkParametersAreChecked) {
  auto bad = [](auto mutate) {
    VddkParams p = params();
    mutate(p);
    EXPECT_THROW(vddk_argv(p, "/s"), UsageError);
  };
  bad([](VddkParams& p) { p.vm_moref = "vm-1 snapshot=x"; });
  bad([](VddkParams& p) { p.thumbprint = "aa:bb"; });
  bad([](VddkParams& p) { p.file = "web01.vmdk"; });
  bad([](VddkParams& p) { p.password_file = "relative"; });
  bad([](VddkParams& p) { p.server = "host;rm -rf"; });
}

TEST(DiskReader, MissingVddkIsAClearError) {
  test::TempDir dir("mk-reader");
  VddkParams p = params();
  p.libdir = dir.file("no-vddk-here");
  try {
    DiskReader::start_vddk(p, dir.path());
    FAIL() << "started without VDDK";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("docs/vddk.md"), std::string::npos) << e.what();
  }
}

// Parameters for the stand-in of nbdkit+VDDK (fake_nbdkit_vddk.sh) in `dir`: a VDDK
// directory, a snapshot of the VM of params() whose disk is a flat file of `size` bytes
// (dir/flat), a password file holding `password`; the fake writes its command line to
// dir/args.
VddkParams fake_vddk(const test::TempDir& dir, uint64_t size, const std::string& password) {
  std::filesystem::create_directories(dir.file("vddk/lib64"));
  std::filesystem::create_directories(dir.file("snapshots"));
  test::create_sparse_file(dir.file("flat"), size);
  test::write_at(dir.file("pw"), 0, password);
  ::setenv("FAKE_VDDK_ARGS", dir.file("args").c_str(), 1);
  ::setenv("FAKE_VDDK_SNAPSHOTS", dir.file("snapshots").c_str(), 1);
  VddkParams p = params();
  test::write_at(dir.file("snapshots/" + p.snapshot_moref), 0,
                 p.vm_moref + "\t" + p.file + "\t" + dir.file("flat") + "\n");
  p.libdir = dir.file("vddk");
  p.password_file = dir.file("pw");
  p.nbdkit = FAKE_NBDKIT_VDDK;
  return p;
}

// The password file nbdkit was given (password=+FILE) in the fake's recorded arguments.
std::string password_file_given(const std::string& args) {
  auto at = args.find("password=+");
  if (at == std::string::npos) return "";
  return args.substr(at + 10, args.find('\n', at) - at - 10);
}

// start_vddk with a stand-in for nbdkit+VDDK (fake_nbdkit_vddk.sh): the launcher's
// command line, waiting for the socket, reading through it and teardown by PID.
TEST(DiskReader, VddkLauncherRunsNbdkitWithThePasswordFileAndTearsDown) {
  test::TempDir dir("mk-reader");
  VddkParams p = fake_vddk(dir, 512 * 1024, "s3cret-pass\n");
  test::write_random_at(dir.file("flat"), 0, 4096, 7);
  auto r = DiskReader::start_vddk(p, dir.path());
  pid_t pid = r->pid();
  {
    auto c = engine::NbdConnection::open({r->uri(), {}, "source"});
    std::string buf(4096, '\0');
    c->pread(buf.data(), buf.size(), 0);
    EXPECT_EQ(buf, test::random_bytes(4096, 7));
  }
  std::string args = test::read_file(dir.file("args"));
  // nbdkit reads a private copy of the password in the reader's own directory.
  std::string copy = password_file_given(args);
  ASSERT_FALSE(copy.empty()) << args;
  EXPECT_NE(copy, dir.file("pw"));
  EXPECT_EQ(test::read_file(copy), "s3cret-pass\n");
  EXPECT_EQ(std::filesystem::status(copy).permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_NE(args.find("snapshot=snapshot-7\n"), std::string::npos) << args;
  EXPECT_NE(args.find("libdir=" + dir.file("vddk") + "\n"), std::string::npos) << args;
  EXPECT_EQ(args.find("s3cret-pass"), std::string::npos) << "the password reached the command line";
  r->stop();
  EXPECT_NE(::kill(pid, 0), 0);
  EXPECT_FALSE(std::filesystem::exists(copy)) << "the password copy outlived the reader";

  // A password file nbdkit cannot read: the launcher reports the failure and the log.
  p.password_file = dir.file("missing-pw");
  try {
    DiskReader::start_vddk(p, dir.path());
    FAIL() << "started without a readable password file";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read the password file"), std::string::npos) << e.what();
  }
}

// Like VDDK, the stand-in opens the disk of the snapshot it is asked for and fails on a
// snapshot it does not know, or a file that is not in it: the launcher reports why.
TEST(DiskReader, VddkReaderOfAnUnknownSnapshotOrFileFailsWithTheReason) {
  test::TempDir dir("mk-reader");
  VddkParams p = fake_vddk(dir, 64 * 1024, "pw\n");
  VddkParams gone = p;
  gone.snapshot_moref = "snapshot-8";
  VddkParams other = p;
  other.file = "[datastore1] web01/web01_1.vmdk";
  for (const auto& [params, reason] : {std::pair{gone, "snapshot 'snapshot-8' of VM 'vm-42' not found"},
                                       std::pair{other, "is not a disk of snapshot 'snapshot-7'"}}) {
    try {
      DiskReader::start_vddk(params, dir.path());
      ADD_FAILURE() << "a reader started on " << params.file << " in " << params.snapshot_moref;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << e.what();
    }
  }
  EXPECT_NO_THROW(DiskReader::start_vddk(p, dir.path())->stop());
}

// A password file written on Windows ends in CR LF; nbdkit strips only the LF, so VDDK
// would log in with "password\r" while the SOAP session logs in with "password".
TEST(DiskReader, VddkGetsThePasswordWithoutATrailingCarriageReturn) {
  test::TempDir dir("mk-reader");
  auto r = DiskReader::start_vddk(fake_vddk(dir, 64 * 1024, "s3cret-pass\r\nsecond line\n"), dir.path());
  std::string copy = password_file_given(test::read_file(dir.file("args")));
  ASSERT_FALSE(copy.empty());
  EXPECT_EQ(test::read_file(copy), "s3cret-pass\n");
}

// VDDK's hot-add transport detaches the snapshot's disks from the VMA when nbdkit ends;
// killing it 3 s after SIGTERM leaves them attached. The reader waits its stop_grace.
TEST(DiskReader, VddkReaderGetsTimeToCleanUpBeforeItIsKilled) {
  test::TempDir dir("mk-reader");
  ::setenv("FAKE_VDDK_CLEANUP_SECONDS", "4", 1);
  auto r = DiskReader::start_vddk(fake_vddk(dir, 64 * 1024, "pw\n"), dir.path());
  r->stop();
  ::unsetenv("FAKE_VDDK_CLEANUP_SECONDS");
  EXPECT_TRUE(std::filesystem::exists(dir.file("args.cleaned"))) << "nbdkit was killed before VDDK cleaned up";
}

TEST(DiskReader, StandInServesTheFlatFileAndStopsByPid) {
  test::TempDir dir("mk-reader");
  test::create_sparse_file(dir.file("disk-flat.vmdk"), 1024 * 1024);
  test::write_random_at(dir.file("disk-flat.vmdk"), 4096, 8192, 1);
  auto r = DiskReader::start_file(dir.file("disk-flat.vmdk"), dir.path());
  pid_t pid = r->pid();
  {
    auto c = engine::NbdConnection::open({r->uri(), {}, "source"});
    EXPECT_EQ(c->size(), 1024u * 1024u);
    EXPECT_TRUE(c->read_only());
    std::string buf(8192, '\0');
    c->pread(buf.data(), buf.size(), 4096);
    EXPECT_EQ(buf, test::random_bytes(8192, 1));
  }
  r->stop();
  EXPECT_NE(::kill(pid, 0), 0);  // reaped and gone
  EXPECT_THROW(engine::NbdConnection::open({r->uri(), {}, "source"}), Error);
  EXPECT_THROW(DiskReader::start_file("relative/path", dir.path()), UsageError);
  // With a read rate the same bytes come through nbdkit's rate filter.
  auto limited = DiskReader::start_file(dir.file("disk-flat.vmdk"), dir.path(), std::chrono::seconds(30), 4 * 1024 * 1024);
  std::ifstream proc("/proc/" + std::to_string(limited->pid()) + "/cmdline");
  std::string cmdline((std::istreambuf_iterator<char>(proc)), std::istreambuf_iterator<char>());
  EXPECT_NE(cmdline.find(std::string("--filter=rate\0", 14)), std::string::npos);
  EXPECT_NE(cmdline.find("rate=33554432"), std::string::npos);
  auto c = engine::NbdConnection::open({limited->uri(), {}, "source"});
  std::string buf(8192, '\0');
  c->pread(buf.data(), buf.size(), 4096);
  EXPECT_EQ(buf, test::random_bytes(8192, 1));
  EXPECT_THROW(DiskReader::start_file(dir.file("missing"), dir.path()), UsageError);
}

}  // namespace
}  // namespace mk::source
