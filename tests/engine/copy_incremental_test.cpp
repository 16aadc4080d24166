// Incremental passes: only the changed areas are copied, from a changed-areas file
// (vSphere's QueryChangedDiskAreas output) or from a qcow2 image's persistent dirty
// bitmap served by qemu-nbd. Bytes outside the changed areas must not be touched.
#include <fmt/format.h>

#include "common/subprocess.h"
#include "copy_fixture.h"
#include "support/qemu_nbd_server.h"

namespace mk::test {
namespace {

using mk::KiB;
using mk::MiB;

// The file a correct incremental pass leaves: `before` with `areas` taken from `source`.
std::string expected_after(const std::string& before, const std::string& source, const std::vector<Area>& areas) {
  std::string expected = before;
  for (const Area& a : areas) expected.replace(a.start, a.length, source.substr(a.start, a.length));
  return expected;
}

// Asserts that `target` holds `expected`, naming the first differing offset.
::testing::AssertionResult holds(const std::string& target, const std::string& expected) {
  std::string actual = read_file(target);
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure() << target << " has " << actual.size() << " bytes, expected " << expected.size();
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    if (actual[i] != expected[i]) {
      return ::testing::AssertionFailure() << target << " differs from the expected image first at offset " << i;
    }
  }
  return ::testing::AssertionSuccess();
}

class CopyChangedAreas : public CopyTest {};

// Source: data [1M, 2M), hole [2M, 3M), data [3M, 3M+4K), holes elsewhere, last byte
// set. The areas touch the first and the last byte and cross data/hole boundaries in
// both directions; the target is pre-filled with a pattern that must survive elsewhere.
TEST_F(CopyChangedAreas, OnlyTheAreasAreWrittenIncludingFirstAndLastByte) {
  std::string source = make_disk("source.img", kOddSize, {{0, 4096}, {1 * MiB, 1 * MiB}, {3 * MiB, 4 * KiB}});
  write_at(source, kOddSize - 1, "\x42");
  std::string target = file("target.img");
  fill_at(target, 0, kOddSize, '\xa5');
  std::string before = read_file(target);
  std::vector<Area> areas{{0, 1},
                          {2 * MiB - 10000, 20000},           // data -> hole
                          {3 * MiB - 777, 777 + 4 * KiB + 5},  // hole -> data -> hole
                          {4 * MiB + 3, 65536 * 2 + 17},      // hole only: zeroed on this reused target
                          {kOddSize - 1, 1}};
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--changed-areas", areas_file("areas.json", areas)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(holds(target, expected_after(before, read_file(source), areas)));
}

TEST_F(CopyChangedAreas, OverlappingAndUnsortedAreasAreMerged) {
  std::string source = make_disk("source.img", 4 * MiB, {{0, 4 * MiB}});
  std::string target = file("target.img");
  fill_at(target, 0, 4 * MiB, '\x11');
  std::string before = read_file(target);
  std::vector<Area> areas{{3 * MiB, 100000}, {100, 5000}, {3000, 70000}, {3 * MiB + 50000, 10}};
  RunResult r = copy(serve(source).uri(), serve(target).uri(),
                     {"--changed-areas", areas_file("areas.json", areas), "--verify"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(holds(target, expected_after(before, read_file(source), areas)));
}

TEST_F(CopyChangedAreas, EmptyListCopiesNothing) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 1 * MiB}});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, '\x11');
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--changed-areas", areas_file("areas.json", {})});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_EQ(read_file(target), std::string(1 * MiB, '\x11'));
}

// vSphere can return tens of thousands of changed areas. 10000 areas of 4K, one every
// 64K over a sparse 625 MiB disk; one in 40 holds data, the rest are holes that must be
// zeroed on this reused target. Spots just outside the areas keep the target's bytes.
TEST_F(CopyChangedAreas, TenThousandAreas) {
  const uint64_t stride = 64 * KiB, count = 10000, size = count * stride;
  std::vector<Area> areas, data;
  for (uint64_t i = 0; i < count; ++i) {
    areas.push_back({i * stride, 4096});
    if (i % 40 == 0) data.push_back({i * stride, 4096});
  }
  std::string source = make_disk("source.img", size, data);
  std::string target = file("target.img");
  create_sparse_file(target, size);
  std::vector<uint64_t> samples{0, 1, 39, 40, 41, 5000, 5001, count - 1};
  for (uint64_t i : samples) {
    fill_at(target, i * stride, 4096, 'G');          // inside an area: must become the source's bytes
    fill_at(target, i * stride + 4096, 100, 'K');    // just outside: must stay
  }
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--changed-areas", areas_file("areas.json", areas)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  for (uint64_t i : samples) {
    EXPECT_EQ(read_at(target, i * stride, 4096), read_at(source, i * stride, 4096)) << "area " << i;
    EXPECT_EQ(read_at(target, i * stride + 4096, 100), std::string(100, 'K')) << "after area " << i;
  }
  for (const Area& a : data) ASSERT_EQ(read_at(target, a.start, a.length), read_at(source, a.start, a.length));
}

// A CBT source without VMware: a qcow2 image whose persistent dirty bitmap records the
// writes made after it was added, served read-only by qemu-nbd.
class CopyDirtyBitmap : public CopyTest {
 protected:
  void qemu(const std::vector<std::string>& argv) {
    std::string out;
    std::string log = file("qemu-tools.log");
    int rc = mk::run_capture(argv, out, log);
    ASSERT_EQ(rc, 0) << argv[0] << " " << argv[1] << " failed: " << out << read_file(log);
  }
  void qemu_io(const std::string& image, const std::string& command) {
    qemu({"qemu-io", "-f", "qcow2", "-c", command, image});
  }
};

TEST_F(CopyDirtyBitmap, OnlyDirtyAreasAreCopied) {
  const uint64_t size = 4 * MiB;
  std::string image = file("disk.qcow2");
  qemu({"qemu-img", "create", "-q", "-f", "qcow2", image, std::to_string(size)});
  qemu_io(image, "write -P 0x11 0 4M");  // the state of an earlier full copy
  qemu({"qemu-img", "bitmap", "--add", image, "cbt"});
  // Changes since: clusters of the default 64K bitmap granularity, one written with
  // zeros (it must be zeroed on the target) and one at the very end.
  qemu_io(image, "write -P 0x22 64k 64k");
  qemu_io(image, "write -P 0x33 1M 192k");
  qemu_io(image, "write -z 2M 64k");
  qemu_io(image, "write -P 0x44 4032k 64k");
  std::vector<Area> dirty{{64 * KiB, 64 * KiB}, {1 * MiB, 192 * KiB}, {2 * MiB, 64 * KiB}, {size - 64 * KiB, 64 * KiB}};

  std::string raw = file("source.raw");  // the image's contents, to compare with
  qemu({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw});
  std::string target = file("target.img");
  fill_at(target, 0, size, '\x5a');
  std::string before = read_file(target);

  QemuNbdServer source({.image = image, .bitmaps = {"cbt"}});
  RunResult r = copy(source.uri(), serve(target).uri(), {"--dirty-bitmap", "cbt", "--verify"});
  ASSERT_EQ(r.exit_code, 0) << describe(r) << "\nqemu-nbd log: " << read_file(source.log_path());
  EXPECT_TRUE(holds(target, expected_after(before, read_file(raw), dirty)));
}

// Two bitmaps with different histories on a disk whose size is not a multiple of the
// 64K bitmap granularity: the pass follows the named one, up to the last partial cluster.
TEST_F(CopyDirtyBitmap, FollowsTheNamedBitmapOnAnUnalignedDisk) {
  const uint64_t size = 5 * MiB + 512;
  std::string image = file("disk.qcow2");
  qemu({"qemu-img", "create", "-q", "-f", "qcow2", image, std::to_string(size)});
  qemu_io(image, "write -P 0x11 0 5M");
  qemu({"qemu-img", "bitmap", "--add", image, "older"});
  qemu_io(image, fmt::format("write -P 0x22 {} 512", 5 * MiB));  // the last, partial cluster
  qemu({"qemu-img", "bitmap", "--add", image, "newer"});
  qemu_io(image, "write -P 0x33 0 4096");
  std::string raw = file("source.raw");
  qemu({"qemu-img", "convert", "-f", "qcow2", "-O", "raw", image, raw});
  QemuNbdServer source({.image = image, .bitmaps = {"older", "newer"}});

  for (const auto& [bitmap, dirty] : {std::pair{"newer", std::vector<Area>{{0, 64 * KiB}}},
                                      std::pair{"older", std::vector<Area>{{0, 64 * KiB}, {5 * MiB, 512}}}}) {
    std::string target = file(std::string("target-") + bitmap);
    fill_at(target, 0, size, '\x5a');
    std::string before = read_file(target);
    RunResult r = copy(source.uri(), serve(target).uri(), {"--dirty-bitmap", bitmap});
    ASSERT_EQ(r.exit_code, 0) << bitmap << ": " << describe(r);
    EXPECT_TRUE(holds(target, expected_after(before, read_file(raw), dirty))) << bitmap;
  }
}

TEST_F(CopyDirtyBitmap, UnknownBitmapIsAUsageError) {
  std::string image = file("disk.qcow2");
  qemu({"qemu-img", "create", "-q", "-f", "qcow2", image, "1M"});
  qemu({"qemu-img", "bitmap", "--add", image, "cbt"});
  std::string target = file("target.img");
  fill_at(target, 0, 1 * MiB, '\x5a');
  QemuNbdServer source({.image = image, .bitmaps = {"cbt"}});
  RunResult r = copy(source.uri(), serve(target).uri(), {"--dirty-bitmap", "nosuch"});
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find("nosuch"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(1 * MiB, '\x5a'));
}

}  // namespace
}  // namespace mk::test
