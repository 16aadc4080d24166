// The qcow2 dirty-bitmap source: a full pass, writes with qemu-io, an incremental pass
// that moves exactly the dirty clusters, sha256 equality after each pass, and the
// commit-after-success discipline (a failed pass keeps the old bitmap's changes).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "common/subprocess.h"
#include "source/pass_copy.h"
#include "source/qcow2_source.h"
#include "support/files.h"
#include "support/nbdkit_log.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"

namespace mk::source {
namespace {

constexpr uint64_t kSize = 8 * 1024 * 1024;
constexpr uint64_t kCluster = 64 * 1024;  // qemu's default bitmap granularity

class Qcow2SourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    run({"qemu-img", "create", "-q", "-f", "qcow2", image, std::to_string(kSize)});
    test::create_sparse_file(target_file, kSize);
    target = std::make_unique<test::NbdkitServer>(test::NbdkitOptions{.plugin = "file", .args = {"file=" + target_file}});
  }

  static void run(const std::vector<std::string>& argv) {
    std::string out;
    ASSERT_EQ(mk::run_capture(argv, out), 0) << argv[0] << " " << argv[1];
  }
  void qemu_io_write(uint64_t offset, uint64_t length, int pattern) {
    run({"qemu-io", "-f", "qcow2", "-c", fmt::format("write -P {} {} {}", pattern, offset, length), image});
  }
  std::string source_sha() {
    run({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, dir.file("raw")});
    return test::sha256_file(dir.file("raw"));
  }
  engine::CopyStats copy(const Pass& pass) {
    EXPECT_EQ(pass.disks().size(), 1u);
    return copy_disk(pass.disks()[0], {target->uri(), {}, "target"});
  }

  test::TempDir dir{"mk-qcow2"};
  std::string image = dir.file("disk.qcow2");
  std::string target_file = dir.file("target.raw");
  std::unique_ptr<test::NbdkitServer> target;
  Qcow2Source source{{{"vm1", {"kvm guest", {image}}}}, dir.path()};
};

TEST_F(Qcow2SourceTest, FullThenIncrementalMovesOnlyDirtyClusters) {
  qemu_io_write(0, 1024 * 1024, 0x11);
  qemu_io_write(5 * 1024 * 1024, 256 * 1024, 0x22);
  ChangeIds stored;
  {
    auto pass = source.open_pass("vm1", stored);
    EXPECT_TRUE(pass->disks()[0].full);
    EXPECT_EQ(pass->disks()[0].capacity, kSize);
    auto stats = copy(*pass);
    EXPECT_EQ(stats.bytes_written, 1024u * 1024 + 256 * 1024);  // holes are not data
    pass->close(true);
    stored[DiskKey(0)] = pass->disks()[0].change_id_to_store;
  }
  EXPECT_EQ(test::sha256_file(target_file), source_sha());
  EXPECT_EQ(source.describe_disks("vm1")[0].change_id, stored[DiskKey(0)]);

  qemu_io_write(2 * kCluster, kCluster, 0x33);           // one cluster
  qemu_io_write(100 * kCluster, 3 * kCluster, 0x44);     // three clusters
  qemu_io_write(0, kCluster, 0x11);                      // same bytes, still dirty
  {
    auto pass = source.open_pass("vm1", stored);
    EXPECT_FALSE(pass->disks()[0].full) << pass->disks()[0].reason;
    EXPECT_EQ(pass->disks()[0].request.dirty_bitmap, stored[DiskKey(0)]);
    auto stats = copy(*pass);
    EXPECT_EQ(stats.bytes_written, 5 * kCluster);
    pass->close(true);
    stored[DiskKey(0)] = pass->disks()[0].change_id_to_store;
  }
  EXPECT_EQ(test::sha256_file(target_file), source_sha());
  // Exactly one bitmap of ours is left: the stored one.
  auto bitmaps = qcow2_bitmaps(image);
  ASSERT_EQ(bitmaps.size(), 1u);
  EXPECT_EQ(bitmaps[0].name, stored[DiskKey(0)]);
}

TEST_F(Qcow2SourceTest, AFailedPassKeepsTheChangesForTheNext) {
  ChangeIds stored;
  qemu_io_write(0, kCluster, 0x01);
  {
    auto pass = source.open_pass("vm1", stored);
    copy(*pass);
    pass->close(true);
    stored[DiskKey(0)] = pass->disks()[0].change_id_to_store;
  }
  qemu_io_write(7 * kCluster, kCluster, 0x02);
  {
    auto pass = source.open_pass("vm1", stored);  // fails: nothing copied
    pass->close(false);
  }
  qemu_io_write(9 * kCluster, kCluster, 0x03);
  {
    auto pass = source.open_pass("vm1", stored);
    auto stats = copy(*pass);
    EXPECT_EQ(stats.bytes_written, 2 * kCluster);  // the failed pass's changes and the new ones
    pass->close(true);
  }
  EXPECT_EQ(test::sha256_file(target_file), source_sha());
}

TEST_F(Qcow2SourceTest, AMissingStoredBitmapForcesAFullPass) {
  qemu_io_write(0, kCluster, 0x01);
  auto pass = source.open_pass("vm1", {{DiskKey(0), "mk-never-existed"}});
  EXPECT_TRUE(pass->disks()[0].full);
  EXPECT_NE(pass->disks()[0].reason.find("mk-never-existed"), std::string::npos);
  copy(*pass);
  pass->close(true);
  EXPECT_EQ(test::sha256_file(target_file), source_sha());
  EXPECT_THROW(source.open_pass("no-such-vm", {}), UsageError);
}

// The connection a disk's copy opens to check the target is the one it copies on: a
// second TLS negotiation per disk and pass would cost time for nothing.
TEST_F(Qcow2SourceTest, ADisksCopyWritesOnTheConnectionItCheckedTheTargetWith) {
  std::string log = dir.file("target.log");
  target = std::make_unique<test::NbdkitServer>(
      test::NbdkitOptions{.plugin = "file", .args = {"file=" + target_file, "logfile=" + log}, .filters = {"log"}});
  qemu_io_write(0, 1024 * 1024, 0x55);
  auto pass = source.open_pass("vm1", {});
  copy(*pass);
  pass->close(true);
  auto writes = test::requests_of(test::parse_nbdkit_log(log), "Write");
  ASSERT_FALSE(writes.empty());
  for (const auto& w : writes) EXPECT_EQ(w.connection, 1u) << "a write came on another connection than the first";
  EXPECT_EQ(test::sha256_file(target_file), source_sha());
}

}  // namespace
}  // namespace mk::source
