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
//  * A powered-off VM's pass, which has no snapshot: it resumes while the VM stays off
//    and unwritten, and starts over, saying why, when the VM was powered on meanwhile;
//    powered on while it copies, the pass fails saying so and nothing is committed.
#include <filesystem>
#include <iostream>

#include "engine/copier.h"
#include "vma_fixture.h"
#include "vsphere/vm_ops.h"

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
  // `snapshots`: how many of ours the VM holds meanwhile (0: a powered-off VM's pass).
  protocol::DiskProgress kill_vma_at(const std::string& job, const vsphere::VmInfo& v, double fraction,
                                     int snapshots = 1) {
    protocol::DiskProgress seen = disk_at(job, std::to_string(v.disks.at(1).key), fraction);
    EXPECT_EQ(our_snapshots(v), snapshots) << "a pass holds one snapshot while it copies (none when the VM is off)";
    vma->kill9();
    return seen;
  }

  std::string checkpoints_dir() { return dir.file("vma/state/checkpoints"); }

  // CBT activated (enabled, then a snapshot taken and removed, as a first pass would) and
  // the VM powered off: its next pass takes no snapshot.
  void activate_cbt_and_power_off(const vsphere::VmInfo& v) {
    vsphere::set_change_tracking(*session, v, true);
    vsphere::remove_snapshot(*session, v, vsphere::create_snapshot(*session, v, "cbt-activation", "test"));
    vsphere::power_off(*session, v);
  }

  int snapshots_created() { return lab.shim_stats()["calls"].value("CreateSnapshot_Task", 0); }

  // A dense VM, powered off with CBT active, registered with an OMA and a VMA whose reader
  // is rate-limited: its next pass takes no snapshot and copies long enough to interrupt.
  vsphere::VmInfo powered_off_vm(int seed) {
    auto v = prepare_dense_vm(seed);
    activate_cbt_and_power_off(v);
    start_vma({.read_rate = std::to_string(kReadRate)});
    start_oma();
    register_vm(v.instance_uuid);
    return v;
  }

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

// A powered-off VM's pass (no snapshot) killed at 60 %: the restarted VMA finds the VM
// still off and its disks' changeIds those the pass started on, and resumes it without a
// snapshot from each disk's checkpoint.
TEST_F(VmaResume, APassWithoutSnapshotResumesWhileTheVmStaysOff) {
  auto v = powered_off_vm(700);
  int created = snapshots_created();
  std::string job = start_job(v.instance_uuid, "full");
  protocol::DiskProgress at_kill = kill_vma_at(job, v, 0.6, 0);
  vma->restart();

  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_committed(j, v.instance_uuid, job);
  protocol::JobProgress p = client->progress(job);
  for (const auto& d : p.disks) EXPECT_FALSE(d.restarted.has_value()) << *d.restarted;
  expect_resumed_within_bound(at_kill, disk_of(p, at_kill.disk_key), "VMA SIGKILLed in a pass without a snapshot");
  expect_targets_match(v.instance_uuid);
  expect_no_snapshot_left(v);
  EXPECT_EQ(snapshots_created(), created) << "a powered-off VM's pass took a snapshot";
  EXPECT_NE(mk::test::read_file(vma->log_path()).find("resuming the pass without a snapshot"), std::string::npos);
}

// The VM powered on while the VMA was down: its disks may have changed since the pass
// without a snapshot started, so every disk starts over (on a snapshot: the VM is on
// now), says why, and ends identical.
TEST_F(VmaResume, APassWithoutSnapshotWhoseVmWasPoweredOnStartsEveryDiskOverAndSaysWhy) {
  auto v = powered_off_vm(800);
  int created = snapshots_created();
  std::string job = start_job(v.instance_uuid, "full");
  kill_vma_at(job, v, 0.4, 0);
  vsphere::power_on(*session, v);
  vma->restart();

  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_committed(j, v.instance_uuid, job);
  protocol::JobProgress p = client->progress(job);
  for (const auto& d : p.disks) {
    ASSERT_TRUE(d.restarted.has_value()) << "disk " << d.disk_key << " does not say why it started over";
    EXPECT_NE(d.restarted->find("was powered on"), std::string::npos) << *d.restarted;
    EXPECT_EQ(d.bytes_resumed, 0) << "disk " << d.disk_key << " resumed although the VM was powered on";
  }
  EXPECT_EQ(events_containing(j, "started over: the pass could not resume"), 2) << j["events"].dump(2);
  EXPECT_EQ(snapshots_created(), created + 1) << "the new pass of the running VM takes a snapshot";
  expect_targets_match(v.instance_uuid);
  expect_no_snapshot_left(v);
}

// Not a resume, but the same pass: the VM powered on while its pass without a snapshot
// copies (the data disk is rate-limited, so it is still copying). The pass fails before
// the data disk reports a change ID, saying what happened and what to do, and the OMA
// commits no disk (the small disk may have completed before: all or none).
TEST_F(VmaResume, AVmPoweredOnDuringItsPassWithoutSnapshotFailsItAndNothingIsCommitted) {
  auto v = powered_off_vm(900);
  std::string job = start_job(v.instance_uuid, "full");
  std::string data_key = std::to_string(v.disks.at(1).key);
  wait_vma(job, [&](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) {
      if (d.disk_key.str() == data_key && d.status == DiskStatus::Copying && d.bytes_done > 0) return true;
    }
    return false;
  });
  vsphere::power_on(*session, v);

  json j = wait_job(job);
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  std::string error = j.value("error", "");
  EXPECT_NE(error.find(fmt::format("VM {} ({}) was powered on (it is poweredOn now) during its pass without a snapshot",
                                   v.name, v.instance_uuid)),
            std::string::npos)
      << j.dump(2);
  EXPECT_NE(error.find("nothing was made final; power it off and run the cutover (or the pass) again"),
            std::string::npos)
      << error;
  for (const auto& d : j["disks"]) EXPECT_FALSE(d["committed"].get<bool>()) << d.dump();
  for (const auto& d : oma->repos().vms.list_disks(v.instance_uuid)) EXPECT_FALSE(d.change_id) << d.disk_key;
  expect_no_snapshot_left(v);
}

}  // namespace
}  // namespace mk::vma::test
