// Resume, not restart (issue 14, item 8), through the whole chain: the real `vma`
// binary copying a VM from vcsim's flat files into a real OMA's nbdkit exports (TLS
// PSK), SIGKILLed in the middle of a full pass and started again on the same state
// directory.
//
//  * The pass's snapshot still exists: the restarted VMA opens the pass again on it and
//    each disk continues from its checkpoint. The bytes copied after the restart (the
//    VMA's own counters: bytes_done minus bytes_resumed) are at most what was left at
//    the kill plus one window — the bytes in flight (CopyOptions::bytes_in_flight) and
//    those confirmed within one checkpoint interval (1 s) at the reader's rate limit,
//    which were written but maybe not flushed and are copied again. The job completes
//    with its change IDs, every target equals its source by sha256, no snapshot is left.
//  * The snapshot was removed while the VMA was down: every disk starts over on a new
//    snapshot, says why (the VMA's progress and the OMA's job log), and ends identical.
#include <filesystem>
#include <iostream>

#include "engine/copier.h"
#include "vma_fixture.h"

namespace mk::vma::test {
namespace {

using nlohmann::json;
using protocol::DiskStatus;

constexpr uint64_t kDataDisk = 48ull << 20;
constexpr uint64_t kReadRate = 4ull << 20;  // bytes/s per reader: the pass lasts long enough to be killed in it

class VmaResume : public VmaFixture {
 protected:
  // The VM with a second disk of kDataDisk written all through (every byte is read).
  vsphere::VmInfo prepare_dense_vm(uint64_t seed) {
    auto v = vm_at("DC0/vm/DC0_H0_VM0");
    v = mk::test::add_lab_disk(*session, v, v.disks.at(0).controller_key, "LocalDS_0", kDataDisk, "data");
    EXPECT_EQ(v.disks.size(), 2u);
    for (auto& d : v.disks) {
      std::string flat = lab.flat_file(d.file_name);
      mk::test::create_sparse_file(flat, d.capacity_bytes);
      mk::test::write_random_at(flat, 0, d.capacity_bytes, seed++);
      flats[v.instance_uuid][d.key] = flat;
    }
    return v;
  }

  // Starts a full pass and SIGKILLs the VMA once the data disk reported `fraction` of
  // its plan done; returns that disk's progress as last seen before the kill.
  protocol::DiskProgress kill_vma_at(const std::string& job, const vsphere::VmInfo& v, double fraction) {
    protocol::DiskProgress seen = disk_at(job, std::to_string(v.disks.at(1).key), fraction);
    EXPECT_EQ(our_snapshots(v), 1) << "a pass holds one snapshot while it copies";
    vma->kill9();
    return seen;
  }

  std::string checkpoints_dir() { return dir.file("vma/state/checkpoints"); }

  // The data disk of `p` (the one seen at the kill).
  static const protocol::DiskProgress& disk_of(const protocol::JobProgress& p, const protocol::DiskKey& key) {
    for (const auto& d : p.disks) {
      if (d.disk_key == key) return d;
    }
    throw Error("no disk " + key.str() + " in the job's progress");
  }

  // The bytes the copy moved after the interruption, by the VMA's counters, against
  // what was left when it was interrupted plus one window.
  void expect_resumed_within_bound(const protocol::DiskProgress& at_kill, const protocol::DiskProgress& done,
                                   const std::string& what) {
    ASSERT_EQ(done.status, DiskStatus::Completed);
    EXPECT_EQ(done.bytes_total, at_kill.bytes_total) << "the resumed pass planned the disk differently";
    const int64_t copied_after = done.bytes_done - done.bytes_resumed;
    const int64_t left = at_kill.bytes_total - at_kill.bytes_done;
    const int64_t window = static_cast<int64_t>(engine::CopyOptions{}.bytes_in_flight + kReadRate);
    std::cout << what << ": data disk of " << done.bytes_total << " bytes planned; interrupted at "
              << at_kill.bytes_done << " done; resumed " << done.bytes_resumed << "; copied after the interruption "
              << copied_after << " (" << 100.0 * static_cast<double>(copied_after) / static_cast<double>(done.bytes_total)
              << " % of the disk; bound " << left + window << " = rest " << left << " + window " << window << ")\n";
    EXPECT_GT(done.bytes_resumed, 0) << "nothing was resumed";
    EXPECT_LE(copied_after, left + window) << "more than the rest plus one window was copied again";
    EXPECT_GE(copied_after, left - window) << "the resume claims ranges it could not have flushed";
  }

  int events_containing(const json& job, const std::string& text) {
    int n = 0;
    for (const auto& e : job["events"]) n += e.value("message", "").find(text) != std::string::npos;
    return n;
  }

  void expect_committed(const json& j, const std::string& vm_id, const std::string& job_id) {
    for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();
    std::map<std::string, std::string> vma_ids;
    for (const auto& d : client->progress(job_id).disks) vma_ids[d.disk_key.str()] = d.change_id.value_or("");
    for (const auto& d : oma->repos().vms.list_disks(vm_id)) {
      ASSERT_TRUE(d.change_id.has_value()) << d.disk_key;
      EXPECT_EQ(*d.change_id, vma_ids[d.disk_key]) << d.disk_key;
    }
  }
};

TEST_F(VmaResume, VmaKilledAtSixtyPercentResumesFromItsCheckpointsAndTheDisksAreIdentical) {
  auto v = prepare_dense_vm(500);
  start_vma({.read_rate = std::to_string(kReadRate)});
  start_oma();
  register_vm(v.instance_uuid);
  std::string job = start_job(v.instance_uuid, "full");
  protocol::DiskProgress at_kill = kill_vma_at(job, v, 0.6);
  ASSERT_GT(at_kill.bytes_total, 0);
  EXPECT_FALSE(std::filesystem::is_empty(checkpoints_dir())) << "the killed pass left no checkpoint";
  vma->restart();

  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_all_phases_in_order(j);  // the resumed run's times add up with the killed one's, each phase once
  EXPECT_EQ(j["bytes_done"], j["bytes_total"]);
  expect_committed(j, v.instance_uuid, job);
  EXPECT_EQ(events_containing(j, "the VMA restarted during the copy"), 1) << j["events"].dump(2);

  // The data disk: what the restarted VMA copied, by its own counters.
  protocol::JobProgress p = client->progress(job);
  for (const auto& d : p.disks) EXPECT_FALSE(d.restarted.has_value()) << *d.restarted;
  expect_resumed_within_bound(at_kill, disk_of(p, at_kill.disk_key), "VMA SIGKILLed");
  EXPECT_EQ(events_containing(j, "resumed: "), 1) << j["events"].dump(2);

  expect_targets_match(v.instance_uuid);
  expect_no_snapshot_left(v);
  EXPECT_TRUE(std::filesystem::is_empty(checkpoints_dir())) << "a completed pass left its checkpoints";
  EXPECT_NE(mk::test::read_file(vma->log_path()).find("resuming the pass on its snapshot"), std::string::npos);

  // The next pass goes on from the change IDs the resumed pass committed.
  write_block(v.instance_uuid, v.disks[1].key, 3, 501);
  json j2 = wait_job(start_job(v.instance_uuid, "incremental"));
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  EXPECT_LT(j2["bytes_done"].get<int64_t>(), static_cast<int64_t>(kDataDisk / 4)) << "an incremental moves changes only";
  expect_targets_match(v.instance_uuid);
}

TEST_F(VmaResume, ASnapshotRemovedWhileTheVmaWasDownStartsEveryDiskOverAndSaysWhy) {
  auto v = prepare_dense_vm(600);
  start_vma({.read_rate = std::to_string(kReadRate)});
  start_oma();
  register_vm(v.instance_uuid);
  std::string job = start_job(v.instance_uuid, "full");
  kill_vma_at(job, v, 0.4);
  // Someone removes the pass's snapshot in vSphere while the VMA is down.
  auto snaps = vsphere::list_snapshots(*session, v.ref);
  ASSERT_EQ(snaps.size(), 1u);
  std::string gone = snaps[0].ref.value;
  vsphere::remove_snapshot(*session, vm_at("DC0/vm/DC0_H0_VM0"), snaps[0].ref);
  vma->restart();

  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_all_phases_in_order(j);  // the resumed run's times add up with the killed one's, each phase once
  expect_committed(j, v.instance_uuid, job);
  protocol::JobProgress p = client->progress(job);
  for (const auto& d : p.disks) {
    ASSERT_TRUE(d.restarted.has_value()) << "disk " << d.disk_key << " does not say why it started over";
    EXPECT_NE(d.restarted->find(gone), std::string::npos) << *d.restarted;
    EXPECT_EQ(d.bytes_resumed, 0) << "disk " << d.disk_key << " resumed from a pass on another snapshot";
  }
  // The job's log (the OMA's API) says it too, once per disk.
  EXPECT_EQ(events_containing(j, "started over: the pass could not resume"), 2) << j["events"].dump(2);
  EXPECT_EQ(events_containing(j, gone), 2) << j["events"].dump(2);
  expect_targets_match(v.instance_uuid);
  expect_no_snapshot_left(v);
  EXPECT_TRUE(std::filesystem::is_empty(checkpoints_dir()));
}

}  // namespace
}  // namespace mk::vma::test
