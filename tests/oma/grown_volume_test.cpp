// A disk grown in vCenter between passes, with CloudStack volumes (issue 16): the next
// pass grows the disk's volume with resizeVolume before anything is copied, the export
// serves the new size (the OMA verifies it over NBD), the disk gets a full pass in the
// volume it had, and what the volume held is kept. When CloudStack refuses the resize,
// the pass fails before the VMA is asked to copy, naming the VM, the disk, the sizes and
// what to do; the volume is never copied into at its old size.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "cloudstack_site.h"
#include "support/files.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::kCapacity;
using test::Site;

constexpr int64_t kGiB = int64_t{1} << 30;

std::vector<protocol::DiscoveredDisk> source_disks(int64_t second) {
  return {{protocol::DiskKey(2000), 0, "Hard disk 1", kCapacity}, {protocol::DiskKey(2001), 1, "Hard disk 2", second}};
}

int calls_of(Site& s, const std::string& command) {
  int n = 0;
  const json st = s.sim.state();
  for (const auto& c : st["calls"]) n += c["command"] == command;
  return n;
}

// A full pass of the VM with both disks as vCenter has them now; its volumes afterwards.
std::map<std::string, std::string> replicated(Site& s) {
  s.prepare_site();
  s.vma.set_source_disks(s.vm, source_disks(kCapacity));
  s.vma.set_auto_complete(true);
  json full = test::wait_for_job(*s.api, s.post_job("/api/v1/jobs", {{"vm_id", s.vm}, {"kind", "full"}}),
                                 test::job_ended);
  EXPECT_EQ(full["status"], "completed") << full.dump(2);
  return s.volume_ids();
}

TEST(GrownDisk, TheNextPassGrowsTheCloudStackVolumeAndItsExportAndCopiesTheDiskInFull) {
  Site s;
  auto volumes = replicated(s);
  ASSERT_EQ(volumes.size(), 2u);
  const std::string device =
      s.sim.by_id_dir() + "/" + mk::cloudstack::CloudStackVolumes::device_link_name(volumes["2001"]);
  mk::test::write_at(device, 4096, "before-growth");
  const int resizes = calls_of(s, "resizeVolume");

  const int64_t grown = kGiB + kCapacity;  // one byte over the volume's whole GiB would do
  s.vma.set_source_disks(s.vm, source_disks(grown));
  json inc = test::wait_for_job(*s.api, s.post_job("/api/v1/jobs", {{"vm_id", s.vm}, {"kind", "incremental"}}),
                                test::job_ended);
  ASSERT_EQ(inc["status"], "completed") << inc.dump(2) << mk::test::log_tail(s.log());

  EXPECT_EQ(s.volume_ids(), volumes) << "the grown disk got a new volume instead of its own, grown";
  EXPECT_EQ(calls_of(s, "resizeVolume"), resizes + 1);
  auto cloud = s.cloud_volumes();
  EXPECT_EQ(cloud[volumes["2001"]]["size"], 2 * kGiB);
  EXPECT_EQ(cloud[volumes["2000"]]["size"], kGiB);
  test::expect_volumes_and_exports(s, 2);
  const json exports = s.api->get("/api/v1/exports").body;
  for (const auto& e : exports["exports"]) {
    if (e["volume_id"] == volumes["2001"]) {
      EXPECT_EQ(e["size_bytes"], 2 * kGiB) << e.dump();
    }
  }
  EXPECT_EQ(mk::test::read_at(device, 4096, 13), "before-growth");
  const json vm = s.vm_json();
  for (const auto& d : vm["disks"]) {
    if (d["key"] == "2001") {
      EXPECT_EQ(d["capacity_bytes"], grown) << d.dump();
    }
  }
  // The pass that followed the growth copied that disk in full, at its new capacity.
  protocol::ReplicateRequest sent = s.vma.replicate_requests().back();
  EXPECT_EQ(sent.kind, protocol::PassKind::Incremental);
  for (const auto& d : sent.disks) {
    if (d.disk_key == protocol::DiskKey(2001)) {
      EXPECT_EQ(d.capacity_bytes, grown);
      EXPECT_FALSE(d.change_id_base);
    } else {
      EXPECT_TRUE(d.change_id_base);
    }
  }
  EXPECT_TRUE(s.vma.violations().empty()) << s.vma.violations()[0];
}

TEST(GrownDisk, AVolumeThatCannotGrowFailsThePassBeforeAnyCopySayingWhatToDo) {
  Site s;
  auto volumes = replicated(s);
  ASSERT_EQ(volumes.size(), 2u);
  const size_t requests = s.vma.replicate_requests().size();
  s.sim.fail({{"command", "resizeVolume"}, {"how", "error"}, {"errorcode", 431},
              {"errortext", "Going from existing size of 1073741824 to size of 2147483648 is not allowed"}});
  s.vma.set_source_disks(s.vm, source_disks(kGiB + kCapacity));
  json inc = test::wait_for_job(*s.api, s.post_job("/api/v1/jobs", {{"vm_id", s.vm}, {"kind", "incremental"}}),
                                test::job_ended);
  ASSERT_EQ(inc["status"], "failed") << inc.dump(2);
  std::string error = inc["error"];
  for (const std::string& part : std::vector<std::string>{fmt::format("VM {} disk 2001 has grown to {} bytes in vCenter", s.vm, kGiB + kCapacity),
                           "volume " + volumes["2001"], "is not allowed", "nothing was copied",
                           fmt::format("grow the volume to at least {} bytes", kGiB + kCapacity)}) {
    EXPECT_NE(error.find(part), std::string::npos) << part << "\n" << error;
  }
  EXPECT_EQ(s.vma.replicate_requests().size(), requests) << "the VMA was asked to copy into a volume too small";
  EXPECT_EQ(s.volume_ids(), volumes);
  EXPECT_TRUE(s.vma.violations().empty()) << s.vma.violations()[0];
}

}  // namespace
}  // namespace mk::oma
