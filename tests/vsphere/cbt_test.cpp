// Changed Block Tracking through the lab's CBT shim in front of vcsim: change IDs in the
// real format on snapshot disks, QueryChangedDiskAreas with "*" and with a change ID,
// paging by startOffset, FileFault for unknown, foreign or stale change IDs, and changes
// known from the lab's write journal (writes the journal missed: every allocated block).
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <regex>

#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "support/files.h"
#include "vsphere/inventory.h"
#include "vsphere/vm_ops.h"

namespace mk::vsphere {
namespace {

using mk::Range;
using mk::RangeList;

constexpr uint64_t kBlock = 64 * 1024;

class VsphereCbt : public ::testing::Test {
 protected:
  void SetUp() override {
    s = Session::connect(test::lab_connect_options(lab));
    vm = describe_vm(*s, find_by_inventory_path(*s, "DC0/vm/DC0_H0_VM0").value());
    ASSERT_EQ(vm.disks.size(), 1u);
    disk = vm.disks[0];
    flat = lab.flat_file(disk.file_name);
    int fd = ::open(flat.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::ftruncate(fd, static_cast<off_t>(disk.capacity_bytes)), 0);
    ::close(fd);
  }

  // A guest's write, as the lab makes one: recorded in the shim's write journal.
  void write_block(uint64_t block, char fill) {
    test::fill_at(flat, block * kBlock + 100, kBlock / 2, fill);  // half a block is enough to change it
  }

  // A write the shim's journal does not hear of.
  void write_block_unjournaled(uint64_t block, char fill) {
    std::string data(kBlock / 2, fill);
    int fd = ::open(flat.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, data.data(), data.size(), static_cast<off_t>(block * kBlock + 100)),
              static_cast<ssize_t>(data.size()));
    ::close(fd);
  }

  // A snapshot and the changeId of the disk in it.
  std::pair<Moref, std::string> snapshot(const std::string& name) {
    Moref snap = create_snapshot(*s, vm, name, "cbt test");
    auto disks = snapshot_disks(*s, snap);
    EXPECT_EQ(disks.size(), 1u);
    return {snap, disks.empty() ? "" : disks[0].change_id};
  }

  RangeList query(const Moref& snap, const std::string& change_id) {
    return query_changed_disk_areas(*s, vm.ref, snap, disk.key, disk.capacity_bytes, change_id);
  }

  std::string fault_of(const Moref& snap, const std::string& change_id) {
    try {
      query(snap, change_id);
    } catch (const SoapFault& f) {
      return f.type();
    }
    return "none";
  }

  test::VcsimLab lab{test::VcsimOptions{kBlock, 2}};  // 2 areas per answer: paging is exercised
  std::unique_ptr<Session> s;
  VmInfo vm;
  DiskInfo disk;
  std::string flat;
};

TEST_F(VsphereCbt, ChangeIdsAppearOnlyOnceCbtIsActive) {
  auto [before, none] = snapshot("before-cbt");
  EXPECT_EQ(none, "");
  EXPECT_EQ(fault_of(before, "*"), "FileFault");
  set_change_tracking(*s, vm, true);
  auto [snap, id] = snapshot("mk-1");
  EXPECT_TRUE(std::regex_match(id, std::regex("([0-9a-f]{2} ){15}[0-9a-f]{2}/[0-9]+"))) << id;
  // The VM's own disk now reports the current change ID too.
  EXPECT_EQ(describe_vm(*s, vm.ref).disks[0].change_id, id);
}

TEST_F(VsphereCbt, StarIsTheAllocatedAreasAndAChangeIdTheChangedBlocks) {
  set_change_tracking(*s, vm, true);
  write_block(0, 'a');
  write_block(3, 'b');
  write_block(4, 'c');
  write_block(9, 'd');
  write_block(15, 'e');
  auto [s1, id1] = snapshot("mk-1");
  // Four separate areas, two per answer: three pages.
  EXPECT_EQ(query(s1, "*"), (RangeList{{0, kBlock}, {3 * kBlock, 2 * kBlock}, {9 * kBlock, kBlock},
                                       {15 * kBlock, kBlock}}));
  write_block(3, 'B');   // changed
  write_block(0, 'a');   // rewritten with the same bytes: written, so changed (CBT tracks writes)
  write_block(12, 'f');  // new
  auto [s2, id2] = snapshot("mk-2");
  EXPECT_NE(id1, id2);
  EXPECT_EQ(id1.substr(0, id1.find('/')), id2.substr(0, id2.find('/')));  // same tracking UUID
  EXPECT_EQ(query(s2, id1), (RangeList{{0, kBlock}, {3 * kBlock, kBlock}, {12 * kBlock, kBlock}}));
  EXPECT_TRUE(query(s2, id2).empty());
  remove_snapshot(*s, vm, s1);
  EXPECT_EQ(query(s2, id1).size(), 3u);  // change IDs outlive their snapshots
  // Changes add up over several snapshots.
  write_block(7, 'g');
  auto [s3, id3] = snapshot("mk-3");
  EXPECT_EQ(query(s3, id2), (RangeList{{7 * kBlock, kBlock}}));
  EXPECT_EQ(query(s3, id1), (RangeList{{0, kBlock}, {3 * kBlock, kBlock}, {7 * kBlock, kBlock}, {12 * kBlock, kBlock}}));
}

TEST_F(VsphereCbt, AWriteTheJournalDidNotHearOfMakesEveryAllocatedBlockChanged) {
  set_change_tracking(*s, vm, true);
  write_block(2, 'a');
  write_block(5, 'b');
  auto [s1, id1] = snapshot("mk-1");
  write_block_unjournaled(5, 'c');
  auto [s2, id2] = snapshot("mk-2");
  // More than was written, never less: the lab cannot know which blocks changed.
  EXPECT_EQ(query(s2, id1), (RangeList{{2 * kBlock, kBlock}, {5 * kBlock, kBlock}}));
  auto [s3, id3] = snapshot("mk-3");
  EXPECT_TRUE(query(s3, id2).empty());  // nothing written since
}

TEST_F(VsphereCbt, UnknownForeignAndStaleChangeIdsAreFileFaults) {
  set_change_tracking(*s, vm, true);
  write_block(1, 'x');
  auto [s1, id1] = snapshot("mk-1");
  std::string uuid = id1.substr(0, id1.find('/'));
  EXPECT_EQ(fault_of(s1, uuid + "/999"), "FileFault");
  EXPECT_EQ(fault_of(s1, "52 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00/1"), "FileFault");
  EXPECT_EQ(fault_of(s1, "garbage"), "FileFault");
  // A CBT reset (off, on, activation snapshot) gives a new UUID; the old ID is stale.
  set_change_tracking(*s, vm, false);
  set_change_tracking(*s, vm, true);
  auto [s2, id2] = snapshot("mk-2");
  EXPECT_NE(id2.substr(0, id2.find('/')), uuid);
  EXPECT_EQ(fault_of(s2, id1), "FileFault");
  EXPECT_EQ(query(s2, "*"), (RangeList{{kBlock, kBlock}}));
}

TEST_F(VsphereCbt, ChecksOffsetsAndSnapshots) {
  set_change_tracking(*s, vm, true);
  auto [s1, id1] = snapshot("mk-1");
  xml::Document keep;
  try {
    s->call("QueryChangedDiskAreas",
            vm.ref.xml("_this") + s1.xml("snapshot") +
                fmt::format("<deviceKey>{}</deviceKey><startOffset>{}</startOffset><changeId>*</changeId>", disk.key,
                            disk.capacity_bytes),
            keep);
    FAIL() << "a start offset past the end was accepted";
  } catch (const SoapFault& f) {
    EXPECT_EQ(f.type(), "InvalidArgument");
  }
  remove_snapshot(*s, vm, s1);
  EXPECT_EQ(fault_of(s1, "*"), "InvalidArgument");  // the snapshot is gone
}

}  // namespace
}  // namespace mk::vsphere
