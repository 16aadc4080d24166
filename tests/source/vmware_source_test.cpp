// The VMware source end to end: vcsim with the CBT shim, a VM with two disks whose flat
// files hold generated data, passes copied by the engine into nbdkit targets, and the
// change-ID bookkeeping per disk (first pass, incremental, CBT reset, rejected ID, any
// QueryChangedDiskAreas fault), a guest writing during a pass (the pass reads its
// snapshot's frozen disks, through the flat-file reader and the VDDK stand-in), the preflight that refuses a VM before touching it, and
// snapshot ownership (leftovers of a crashed run removed, another owner's pass left alone),
// and a powered-off VM's pass without a snapshot (and what breaks it: power-on, a write).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <optional>
#include <thread>

#include "common/error.h"
#include "common/units.h"
#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "source/change_ids.h"
#include "source/pass_copy.h"
#include "source/vmware_source.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"
#include "vsphere/vm_ops.h"

namespace mk::source {
namespace {

constexpr uint64_t kBlock = 64 * 1024;

class VmwareSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    connect = mk::test::lab_connect_options(lab);
    session = vsphere::Session::connect(connect);
    auto ref = vsphere::find_by_inventory_path(*session, "DC0/vm/DC0_H0_VM0").value();
    vm = vsphere::describe_vm(*session, ref);
    vm = test::add_lab_disk(*session, vm, vm.disks[0].controller_key, vm.disks[0].datastore, 4096 * 1024, "disk2");
    ASSERT_EQ(vm.disks.size(), 2u);
    for (auto& d : vm.disks) {
      std::string flat = lab.flat_file(d.file_name);
      test::create_sparse_file(flat, d.capacity_bytes);
      flats[d.key] = flat;
      test::create_sparse_file(work.file(fmt::format("target-{}", d.key)), d.capacity_bytes);
      targets[d.key] = std::make_unique<test::NbdkitServer>(
          test::NbdkitOptions{.plugin = "file", .args = {"file=" + work.file(fmt::format("target-{}", d.key))}});
    }
    key1 = vm.disks[0].key;
    key2 = vm.disks[1].key;
    VmwareSourceOptions o;
    o.work_dir = work.path();
    o.flat_file_for = [this](const vsphere::DiskInfo& d) { return lab.flat_file(d.file_name); };
    source = std::make_unique<VmwareSource>(session, connect, o);
  }

  void write_blocks(int key, std::initializer_list<uint64_t> blocks, uint64_t seed) {
    for (uint64_t b : blocks) test::write_random_at(flats[key], b * kBlock, kBlock, seed + b);
  }

  // Copies every disk of the pass; returns bytes written per disk key.
  std::map<int, uint64_t> copy_all(const Pass& pass, std::map<int, engine::CopyStats>* stats = nullptr) {
    std::map<int, uint64_t> written;
    for (auto& d : pass.disks()) {
      auto s = copy_disk(d, {targets.at(d.key.value())->uri(), {}, "target"});
      written[d.key.value()] = s.bytes_written;
      if (stats) (*stats)[d.key.value()] = s;
    }
    return written;
  }

  void expect_targets_match() {
    for (auto& [key, flat] : flats) {
      EXPECT_EQ(test::sha256_file(work.file(fmt::format("target-{}", key))), test::sha256_file(flat)) << "disk " << key;
    }
  }

  // One pass: open, copy, close(true), store the change IDs.
  std::map<int, uint64_t> pass_and_commit(std::vector<DiskPass>* seen = nullptr) {
    auto pass = source->open_pass(vm.instance_uuid, stored);
    auto written = copy_all(*pass);
    if (seen) *seen = pass->disks();
    pass->close(true);
    for (auto& d : pass->disks()) stored[d.key] = d.change_id_to_store;
    expect_targets_match();
    EXPECT_TRUE(vsphere::list_snapshots(*session, vm.ref).empty()) << "the pass's snapshot was left behind";
    return written;
  }

  // A source whose readers are the VDDK stand-in (fake_nbdkit_vddk.sh), which serves the
  // disks of the snapshots the lab's shim lists, as VDDK reads a snapshot's disks.
  std::unique_ptr<VmwareSource> vddk_source() {
    std::filesystem::create_directories(work.file("vddk/lib64"));
    ::setenv("FAKE_VDDK_ARGS", work.file("vddk-args").c_str(), 1);
    ::setenv("FAKE_VDDK_SNAPSHOTS", lab.snapshot_index().c_str(), 1);
    VmwareSourceOptions o;
    o.work_dir = work.path();
    o.vddk.libdir = work.file("vddk");
    o.vddk.nbdkit = FAKE_NBDKIT_VDDK;
    return std::make_unique<VmwareSource>(session, connect, o);
  }

  void guest_writes_during_a_pass();
  void powered_off_pass_takes_no_snapshot();
  void no_snapshot_pass_broken_by(const std::function<void()>& change, const std::string& what);

  int qcda_calls() { return lab.shim_stats()["calls"].value("QueryChangedDiskAreas", 0); }
  // What the lab (vcsim and the CBT shim) spent answering `method`'s calls so far.
  double lab_seconds(const std::string& method) {
    auto stats = lab.shim_stats();
    return stats["upstream_seconds"].value(method, 0.0) + stats["shim_seconds"].value(method, 0.0);
  }

  // Another driver on the same vCenter: another VMA, or the CLI.
  std::unique_ptr<VmwareSource> source_of(const std::string& owner) {
    VmwareSourceOptions o;
    o.work_dir = work.path();
    o.owner = owner;
    o.flat_file_for = [this](const vsphere::DiskInfo& d) { return lab.flat_file(d.file_name); };
    return std::make_unique<VmwareSource>(session, connect, o);
  }

  test::VcsimLab lab{test::VcsimOptions{kBlock, 3}};
  test::TempDir work{"mk-vmware"};
  vsphere::ConnectOptions connect;
  std::shared_ptr<vsphere::Session> session;
  vsphere::VmInfo vm;
  std::map<int, std::string> flats;
  std::map<int, std::unique_ptr<test::NbdkitServer>> targets;
  int key1 = 0, key2 = 0;
  std::unique_ptr<VmwareSource> source;
  ChangeIds stored;
};

TEST_F(VmwareSourceTest, FullThenIncrementalPassesMoveOnlyChangedBlocksPerDisk) {
  write_blocks(key1, {0, 1, 5, 15}, 100);
  write_blocks(key2, {3, 4, 20, 21, 22, 63}, 200);
  EXPECT_FALSE(vm.cbt_enabled);
  std::vector<DiskPass> seen;
  auto w = pass_and_commit(&seen);  // enables CBT, first pass: the allocated areas
  EXPECT_TRUE(vsphere::describe_vm(*session, vm.ref).cbt_enabled);
  for (auto& d : seen) EXPECT_TRUE(d.full) << d.reason;
  EXPECT_EQ(w[key1], 4 * kBlock);
  EXPECT_EQ(w[key2], 6 * kBlock);
  // Two disks, two independent change IDs (different tracking UUIDs).
  EXPECT_NE(change_id_uuid(stored[DiskKey(key1)]), change_id_uuid(stored[DiskKey(key2)]));

  write_blocks(key1, {5, 9}, 300);
  write_blocks(key2, {40}, 400);
  w = pass_and_commit(&seen);
  for (auto& d : seen) EXPECT_FALSE(d.full) << d.reason;
  EXPECT_EQ(w[key1], 2 * kBlock);
  EXPECT_EQ(w[key2], 1 * kBlock);

  // Only the second disk changes: the first moves nothing.
  write_blocks(key2, {1, 2, 7, 50, 60}, 500);  // five separate areas: the shim pages by 3
  w = pass_and_commit();
  EXPECT_EQ(w[key1], 0u);
  EXPECT_EQ(w[key2], 5 * kBlock);
}

// A guest that keeps writing while a pass copies: the pass copies the disks as they were
// at its snapshot (the snapshot's frozen disks, never the VM's live flat files), it
// stores the snapshot's change ID (the VM's own moved on with the writes), and the next
// pass moves exactly the blocks written meanwhile, a rewrite of the same bytes included;
// then the targets equal the live disks.
void VmwareSourceTest::guest_writes_during_a_pass() {
  write_blocks(key1, {0, 2, 5}, 10);
  write_blocks(key2, {1, 8}, 20);
  pass_and_commit();  // enables CBT: the first pass
  write_blocks(key1, {3}, 30);
  std::map<int, std::string> at_snapshot;
  for (auto& [key, flat] : flats) at_snapshot[key] = test::sha256_file(flat);

  double lab_create = lab_seconds("CreateSnapshot_Task"), lab_remove = lab_seconds("RemoveSnapshot_Task");
  auto opening = std::chrono::steady_clock::now();
  auto pass = source->open_pass(vm.instance_uuid, stored);
  double open_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - opening).count();
  // Its snapshot phase holds vCenter's creation of the snapshot, within opening the pass.
  lab_create = lab_seconds("CreateSnapshot_Task") - lab_create;
  EXPECT_GT(lab_create, 0.0);
  EXPECT_GE(pass->snapshot_seconds(), lab_create);
  EXPECT_LT(pass->snapshot_seconds(), open_seconds);
  std::map<int, std::string> frozen;  // the snapshot's flat files
  for (auto& d : pass->disks()) {
    frozen[d.key.value()] = lab.flat_file(d.label);  // the snapshot's disk file name
    EXPECT_NE(frozen[d.key.value()], flats[d.key.value()]) << "the snapshot's disk is the VM's live file";
  }
  write_blocks(key1, {3, 7}, 40);  // new bytes on block 3 (already changed for this pass) and 7
  write_blocks(key2, {1}, 20);     // block 1 again with the bytes it holds: still a write
  ASSERT_NE(test::sha256_file(flats[key1]), at_snapshot[key1]);
  auto written = copy_all(*pass);
  EXPECT_EQ(written[key1], kBlock) << "this pass copies block 3, changed before its snapshot";
  EXPECT_EQ(written[key2], 0u);
  for (auto& [key, sha] : at_snapshot) {
    EXPECT_EQ(test::sha256_file(work.file(fmt::format("target-{}", key))), sha)
        << "disk " << key << ": the pass did not copy the disk as it was at its snapshot";
  }
  auto now = vsphere::describe_vm(*session, vm.ref);
  for (auto& d : pass->disks()) {
    for (auto& current : now.disks) {
      if (current.key != d.key.value()) continue;
      EXPECT_NE(current.change_id, d.change_id_to_store) << "the VM's change ID did not move on with the writes";
      EXPECT_EQ(change_id_uuid(current.change_id), change_id_uuid(d.change_id_to_store));
    }
  }
  EXPECT_EQ(pass->snapshot_removal_seconds(), 0.0) << "removed before the pass was closed";
  auto closing = std::chrono::steady_clock::now();
  pass->close(true);
  double close_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - closing).count();
  lab_remove = lab_seconds("RemoveSnapshot_Task") - lab_remove;
  EXPECT_GT(lab_remove, 0.0);
  EXPECT_GE(pass->snapshot_removal_seconds(), lab_remove);
  EXPECT_LE(pass->snapshot_removal_seconds(), close_seconds);
  for (auto& d : pass->disks()) stored[d.key] = d.change_id_to_store;
  for (auto& [key, path] : frozen) EXPECT_FALSE(std::filesystem::exists(path)) << "outlived its snapshot: " << path;

  auto next = pass_and_commit();  // and the targets now equal the live disks
  EXPECT_EQ(next[key1], 2 * kBlock);
  EXPECT_EQ(next[key2], kBlock);
}

TEST_F(VmwareSourceTest, WritesAfterThePassSnapshotGoToTheNextPassNotThisOne) { guest_writes_during_a_pass(); }

TEST_F(VmwareSourceTest, WritesAfterThePassSnapshotGoToTheNextPassNotThisOneThroughVddk) {
  source = vddk_source();
  guest_writes_during_a_pass();
  std::string args = test::read_file(work.file("vddk-args"));
  EXPECT_NE(args.find("snapshot=snapshot-"), std::string::npos) << args;
}

// The same passes through the tool the VMA runs per disk: `migratekit copy` with the
// pass's changed areas in a file.
TEST_F(VmwareSourceTest, PassesThroughTheMigratekitTool) {
  write_blocks(key1, {0, 2}, 10);
  write_blocks(key2, {8}, 20);
  for (int round = 0; round < 2; ++round) {
    auto pass = source->open_pass(vm.instance_uuid, stored);
    for (auto& d : pass->disks()) {
      std::vector<std::string> args = {"copy", d.uri, targets.at(d.key.value())->uri(), "-q"};
      for (auto& a : copy_arguments(d, work.file(fmt::format("areas-{}-{}.json", d.key.value(), round)))) args.push_back(a);
      auto r = test::run_migratekit(args);
      ASSERT_EQ(r.exit_code, 0) << r.err;
      // First round: the allocated areas; second: the one changed block of disk 2 only.
      uint64_t expect = round == 0 ? (d.key.value() == key1 ? 2 : 1) * kBlock : (d.key.value() == key1 ? 0 : kBlock);
      EXPECT_NE(r.out.find(fmt::format("{} written", format_bytes(expect))), std::string::npos)
          << "disk " << d.key.value() << " round " << round << ": " << r.out;
    }
    pass->close(true);
    for (auto& d : pass->disks()) stored[d.key] = d.change_id_to_store;
    expect_targets_match();
    write_blocks(key2, {30}, 30);
  }
}

TEST_F(VmwareSourceTest, ACbtResetForcesAFullPassWithTheReason) {
  write_blocks(key1, {0, 3}, 1);
  write_blocks(key2, {0}, 2);
  pass_and_commit();
  vsphere::set_change_tracking(*session, vm, false);  // CBT reset: off and on again
  vsphere::set_change_tracking(*session, vm, true);
  write_blocks(key1, {4}, 3);
  std::vector<DiskPass> seen;
  std::map<int, engine::CopyStats> stats;
  {
    int before = qcda_calls();
    auto pass = source->open_pass(vm.instance_uuid, stored);
    EXPECT_EQ(qcda_calls(), before) << "asked for \"*\" although the answer is not used";
    copy_all(*pass, &stats);
    seen = pass->disks();
    pass->close(true);
    for (auto& d : pass->disks()) stored[d.key] = d.change_id_to_store;
  }
  for (auto& d : seen) {
    EXPECT_TRUE(d.full);
    EXPECT_NE(d.reason.find("reset"), std::string::npos) << d.reason;
    EXPECT_FALSE(d.request.changed_areas.has_value()) << "a forced full pass covers the whole disk";
  }
  EXPECT_EQ(stats[key1].bytes_written, 3 * kBlock);
  EXPECT_EQ(stats[key2].bytes_written, 1 * kBlock);
  expect_targets_match();
  // And the next pass is incremental again from the new change IDs.
  write_blocks(key2, {9}, 4);
  EXPECT_EQ(pass_and_commit()[key2], kBlock);
}

TEST_F(VmwareSourceTest, AChangeIdThatVsphereRejectsForcesAFullPass) {
  write_blocks(key1, {2}, 1);
  pass_and_commit();
  stored[DiskKey(key1)] = change_id_uuid(stored[DiskKey(key1)]) + "/999";  // right UUID, unknown sequence
  std::vector<DiskPass> seen;
  pass_and_commit(&seen);
  for (auto& d : seen) {
    if (d.key.value() == key1) {
      EXPECT_TRUE(d.full);
      EXPECT_NE(d.reason.find("FileFault"), std::string::npos) << d.reason;
      EXPECT_FALSE(d.request.changed_areas.has_value()) << "the whole disk, without asking for \"*\"";
    } else {
      EXPECT_FALSE(d.full) << d.reason;
    }
  }
}

// The VMA cannot tell a fresh target from a reused one: a disk without a stored change ID
// is copied whole (zeroing what is no longer allocated), and "*" is not asked for.
TEST_F(VmwareSourceTest, TargetsThatMayHoldDataGetTheWholeDiskWithoutAStarQuery) {
  VmwareSourceOptions o;
  o.work_dir = work.path();
  o.targets_may_hold_data = true;
  o.flat_file_for = [this](const vsphere::DiskInfo& d) { return lab.flat_file(d.file_name); };
  source = std::make_unique<VmwareSource>(session, connect, o);
  write_blocks(key1, {0, 4}, 1);
  int before = qcda_calls();
  std::vector<DiskPass> seen;
  pass_and_commit(&seen);
  EXPECT_EQ(qcda_calls(), before);
  for (auto& d : seen) {
    EXPECT_TRUE(d.full);
    EXPECT_FALSE(d.request.changed_areas.has_value());
    EXPECT_NE(d.reason.find("may hold an earlier copy"), std::string::npos) << d.reason;
  }
  write_blocks(key1, {9}, 2);
  pass_and_commit(&seen);  // incremental: asks as before
  EXPECT_GT(qcda_calls(), before);
  for (auto& d : seen) EXPECT_FALSE(d.full) << d.reason;
}

// Not only FileFault: whatever vSphere answers instead of the areas (a subclass of
// FileFault, InvalidArgument after a CBT reset it did not report, SystemError on a
// datastore that cannot answer) makes that disk a full pass with the fault as reason;
// the job never fails for ever on a change ID that keeps being refused.
TEST_F(VmwareSourceTest, AnyQueryFaultButNotAuthenticatedMakesThatDiskAFullPass) {
  write_blocks(key1, {2}, 1);
  write_blocks(key2, {5}, 2);
  pass_and_commit();
  for (const std::string fault : {"InvalidArgument", "FileNotFound", "SystemError"}) {
    write_blocks(key1, {7}, 3);
    lab.inject_qcda_fault(fault, 1, "stored", "injected " + fault);
    std::vector<DiskPass> seen;
    pass_and_commit(&seen);
    int full = 0;
    for (auto& d : seen) {
      if (!d.full) continue;
      ++full;
      EXPECT_NE(d.reason.find(fault), std::string::npos) << d.reason;
      EXPECT_NE(d.reason.find("whole disk"), std::string::npos) << d.reason;
      EXPECT_FALSE(d.request.changed_areas.has_value());
    }
    EXPECT_EQ(full, 1) << fault << ": exactly the disk whose query failed";
  }
  // A first pass whose "*" cannot be answered (NFS, vVols): the whole disk.
  stored.clear();
  lab.inject_qcda_fault("SystemError", 2, "*");
  std::vector<DiskPass> seen;
  pass_and_commit(&seen);
  for (auto& d : seen) {
    EXPECT_TRUE(d.full);
    EXPECT_FALSE(d.request.changed_areas.has_value()) << d.reason;
  }
}

// NotAuthenticated is the session's business: it logs in again and retries once; a
// second refusal fails the pass (credentials, not the disk) and leaves nothing behind.
TEST_F(VmwareSourceTest, NotAuthenticatedAfterALoginAgainFailsThePass) {
  write_blocks(key1, {2}, 1);
  pass_and_commit();
  lab.inject_qcda_fault("NotAuthenticated", 1, "stored");
  std::vector<DiskPass> seen;
  pass_and_commit(&seen);  // one refusal: logged in again, retried, incremental
  for (auto& d : seen) EXPECT_FALSE(d.full) << d.reason;
  lab.inject_qcda_fault("NotAuthenticated", 2, "stored");
  try {
    source->open_pass(vm.instance_uuid, stored);
    FAIL() << "a pass went on without a session";
  } catch (const vsphere::SoapFault& f) {
    EXPECT_EQ(f.type(), "NotAuthenticated");
  }
  EXPECT_TRUE(vsphere::list_snapshots(*session, vm.ref).empty());
}

// The preflight refuses a VM before anything changes on it: no CBT, no snapshot.
TEST_F(VmwareSourceTest, APreflightFindingRefusesThePassBeforeTouchingTheVm) {
  vm = test::add_lab_disk(*session, vm, vm.disks[0].controller_key, "LocalDS_0", 1024 * 1024, "indep",
                          {.disk_mode = "independent_persistent"});
  try {
    source->open_pass(vm.instance_uuid, stored);
    FAIL() << "a VM with an independent disk was replicated";
  } catch (const UsageError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("VM DC0_H0_VM0 disk"), std::string::npos) << what;
    EXPECT_NE(what.find("[LocalDS_0] DC0_H0_VM0/indep.vmdk"), std::string::npos) << what;
    EXPECT_NE(what.find("Dependent"), std::string::npos) << what;
  }
  auto now = vsphere::describe_vm(*session, vm.ref);
  EXPECT_FALSE(now.cbt_enabled);
  EXPECT_TRUE(now.snapshots.empty());
}

TEST_F(VmwareSourceTest, AFailedPassKeepsTheOldChangeIdsAndCleansUp) {
  write_blocks(key1, {1}, 1);
  pass_and_commit();
  ChangeIds before = stored;
  write_blocks(key1, {6}, 2);
  {
    auto pass = source->open_pass(vm.instance_uuid, stored);
    EXPECT_EQ(vsphere::list_snapshots(*session, vm.ref).size(), 1u);
  }  // dropped without success: the snapshot goes, nothing is stored
  EXPECT_TRUE(vsphere::list_snapshots(*session, vm.ref).empty());
  EXPECT_EQ(stored, before);
  EXPECT_EQ(pass_and_commit()[key1], kBlock);  // the change is still found
}

// A pass starts its disks' readers while vCenter answers the change queries: the first
// reader here waits (up to 10 s) until the lab's vCenter has answered both disks' queries,
// which it never would if the queries came one after another between the readers. The
// second reader starts 200 ms late, so that the wait for readers is longer than the
// snapshot: counted once per disk, it would add up to more than the opening took.
TEST_F(VmwareSourceTest, ReadersStartWhileVcenterAnswersTheChangeQueries) {
  int before = qcda_calls();
  std::optional<int> answered_when_first_reader_started;
  VmwareSourceOptions o;
  o.work_dir = work.path();
  o.flat_file_for = [&](const vsphere::DiskInfo& d) {
    if (!answered_when_first_reader_started) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (qcda_calls() < before + 2 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      answered_when_first_reader_started = qcda_calls() - before;
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return lab.flat_file(d.file_name);
  };
  source = std::make_unique<VmwareSource>(session, connect, o);
  write_blocks(key1, {2}, 1);
  auto opened = std::chrono::steady_clock::now();
  auto pass = source->open_pass(vm.instance_uuid, stored);
  double open_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - opened).count();
  EXPECT_EQ(answered_when_first_reader_started, 2);
  // The disks' change queries and reader starts add up to no more than the opening took
  // (the VMA counts the rest as the snapshot's time): the readers' wait after the
  // queries is split between the disks, not counted once per disk.
  double phases = 0;
  for (auto& d : pass->disks()) {
    EXPECT_GE(d.reader_start_seconds, 0.0) << d.label;
    phases += d.change_query_seconds + d.reader_start_seconds;
  }
  EXPECT_LE(phases, open_seconds);
  copy_all(*pass);
  pass->close(true);
  expect_targets_match();
}

TEST_F(VmwareSourceTest, LeftoverSnapshotsOfACrashedRunAreRemovedOthersKept) {
  std::string mine = "migratekit-owner=" + source->owner() + ";";
  vsphere::create_snapshot(*session, vm, "migratekit-20250101T000000Z", "left by a crash; " + mine);
  vsphere::create_snapshot(*session, vm, "migratekit-20250101T000001Z", "a pass; migratekit-owner=vma-other;");
  write_blocks(key1, {0}, 1);
  {
    auto pass = source->open_pass(vm.instance_uuid, stored);
    auto names = vsphere::list_snapshots(*session, vm.ref);
    ASSERT_EQ(names.size(), 2u);  // the other owner's and this pass's
    EXPECT_EQ(names[0].name, "migratekit-20250101T000001Z");
    pass->close(true);
  }
  auto left = vsphere::list_snapshots(*session, vm.ref);
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].name, "migratekit-20250101T000001Z");
}

// Two VMAs (or a VMA and the CLI) on one vCenter: one's start-up clean-up, over the whole
// inventory in one query, removes its own leftovers and never the other's running pass.
TEST_F(VmwareSourceTest, AnotherOwnersCleanUpLeavesARunningPassAlone) {
  auto vma_a = source_of("vma-a");
  auto vma_b = source_of("vma-b");
  write_blocks(key1, {0, 3}, 1);
  auto pass = vma_a->open_pass(vm.instance_uuid, stored);  // A is in the middle of a pass
  auto other = vsphere::describe_vm(*session, vsphere::find_by_inventory_path(*session, "DC0/vm/DC0_H0_VM1").value());
  vsphere::create_snapshot(*session, other, "migratekit-20250101T000000Z", "crash; migratekit-owner=vma-b;");
  std::vector<std::string> locked, errors;
  int removed = vma_b->remove_all_leftover_snapshots(
      [&](const std::string& id) {
        locked.push_back(id);
        return std::unique_lock<std::mutex>();
      },
      errors);
  EXPECT_EQ(removed, 1);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(locked, std::vector<std::string>{other.instance_uuid});
  EXPECT_TRUE(vsphere::list_snapshots(*session, other.ref).empty());
  ASSERT_EQ(vsphere::list_snapshots(*session, vm.ref).size(), 1u) << "B removed A's running pass";
  // A's pass goes on and ends normally.
  copy_all(*pass);
  pass->close(true);
  EXPECT_TRUE(vsphere::list_snapshots(*session, vm.ref).empty());
}

// VDDK is told vCenter's port when the URL has one (the lab's is never 443), and gets
// the server as a host name without it.
TEST_F(VmwareSourceTest, VddkReadersGetTheVcentersPort) {
  auto vddk = vddk_source();
  auto pass = vddk->open_pass(vm.instance_uuid, stored);
  std::string args = test::read_file(work.file("vddk-args"));
  EXPECT_NE(args.find(fmt::format("port={}\n", session->port())), std::string::npos) << args;
  EXPECT_NE(args.find("server=127.0.0.1\n"), std::string::npos) << args;
  EXPECT_GT(session->port(), 0);
  pass->close(false);
}

TEST_F(VmwareSourceTest, CbtOffAndNotAllowedToEnableIsRefused) {
  VmwareSourceOptions o;
  o.work_dir = work.path();
  o.enable_cbt = false;
  o.flat_file_for = [this](const vsphere::DiskInfo& d) { return lab.flat_file(d.file_name); };
  VmwareSource strict(session, connect, o);
  EXPECT_THROW(strict.open_pass(vm.instance_uuid, {}), UsageError);
  EXPECT_TRUE(vsphere::list_snapshots(*session, vm.ref).empty());
  auto vms = strict.list_vms();
  EXPECT_EQ(vms.size(), 4u);
  auto disks = strict.describe_disks(vm.instance_uuid);
  ASSERT_EQ(disks.size(), 2u);
  EXPECT_EQ(disks[1].capacity, 4096u * 1024u);
}


// A powered-off VM with CBT active (a cutover's final pass: the source is off): the pass
// takes no snapshot, reads the VM's own disks, asks for the areas changed since the
// stored change IDs up to the VM's current point, and stores the disks' current
// changeIds. A VM that is on gets a snapshot, as before.
void VmwareSourceTest::powered_off_pass_takes_no_snapshot() {
  auto creates = [&] { return lab.shim_stats()["calls"].value("CreateSnapshot_Task", 0); };
  write_blocks(key1, {0, 2, 5}, 10);
  write_blocks(key2, {1, 8}, 20);
  int before = creates();
  pass_and_commit();  // on: enables CBT, the first pass on a snapshot
  EXPECT_GT(creates(), before) << "a powered-on VM's pass must take a snapshot";

  write_blocks(key1, {3, 9}, 30);
  write_blocks(key2, {40}, 40);
  vsphere::power_off(*session, vm);
  before = creates();
  auto pass = source->open_pass(vm.instance_uuid, stored);
  EXPECT_EQ(pass->snapshot_seconds(), 0.0);
  EXPECT_TRUE(pass->snapshot_id().starts_with(kNoSnapshot)) << pass->snapshot_id();
  EXPECT_TRUE(vsphere::list_snapshots(*session, vm.ref).empty()) << "a powered-off VM's pass took a snapshot";
  auto now = vsphere::describe_vm(*session, vm.ref);
  for (auto& d : pass->disks()) {
    EXPECT_FALSE(d.full) << d.reason;
    EXPECT_EQ(lab.flat_file(d.label), flats[d.key.value()]) << "not the VM's own disk";
    for (auto& current : now.disks) {
      if (current.key == d.key.value()) EXPECT_EQ(d.change_id_to_store, current.change_id);
    }
    EXPECT_NE(d.change_id_to_store, stored[d.key]) << "the writes made no new point";
  }
  auto written = copy_all(*pass);
  EXPECT_EQ(written[key1], 2 * kBlock);
  EXPECT_EQ(written[key2], kBlock);
  EXPECT_NO_THROW(pass->check_point_in_time());
  pass->close(true);
  EXPECT_EQ(pass->snapshot_removal_seconds(), 0.0);
  for (auto& d : pass->disks()) stored[d.key] = d.change_id_to_store;
  expect_targets_match();
  EXPECT_EQ(creates(), before) << "a powered-off VM's pass took a snapshot";

  // Off and unchanged: nothing to copy.
  auto w = pass_and_commit();
  EXPECT_EQ(w[key1], 0u);
  EXPECT_EQ(w[key2], 0u);
  EXPECT_EQ(creates(), before);
}

TEST_F(VmwareSourceTest, APoweredOffVmsPassTakesNoSnapshotAndStoresTheCurrentChangeIds) {
  powered_off_pass_takes_no_snapshot();
}

TEST_F(VmwareSourceTest, APoweredOffVmsPassTakesNoSnapshotThroughVddk) {
  source = vddk_source();
  powered_off_pass_takes_no_snapshot();
  std::string args = test::read_file(work.file("vddk-args"));
  EXPECT_EQ(args.find("snapshot="), std::string::npos) << "VDDK was given a snapshot: " << args;
  EXPECT_NE(args.find(fmt::format("vm=moref={}\n", vm.ref.value)), std::string::npos) << args;
}

// A powered-off VM's pass, then `change` (the VM powered on, or its disk written): the
// pass may not report a change ID (PointInTimeLost, saying what to do) and neither it
// nor the job that ran it may resume (SnapshotGone: the pass starts over).
void VmwareSourceTest::no_snapshot_pass_broken_by(const std::function<void()>& change, const std::string& what) {
  write_blocks(key1, {0, 2}, 10);
  write_blocks(key2, {1}, 20);
  pass_and_commit();
  write_blocks(key1, {4}, 30);
  vsphere::power_off(*session, vm);
  auto pass = source->open_pass(vm.instance_uuid, stored);
  ASSERT_TRUE(pass->snapshot_id().starts_with(kNoSnapshot)) << pass->snapshot_id();
  std::string id = pass->snapshot_id();
  copy_all(*pass);
  change();
  try {
    pass->check_point_in_time();
    ADD_FAILURE() << "the pass holds although the VM " << what;
  } catch (const PointInTimeLost& e) {
    std::string m = e.what();
    EXPECT_NE(m.find(fmt::format("VM {} ({}) {}", vm.name, vm.instance_uuid, what)), std::string::npos) << m;
    EXPECT_NE(m.find("during its pass without a snapshot"), std::string::npos) << m;
    EXPECT_NE(m.find("nothing was made final; power it off and run the cutover (or the pass) again"),
              std::string::npos)
        << m;
  }
  EXPECT_THROW(pass->resume_disk(DiskKey(key1), false), SnapshotGone);
  pass->close(false);
  try {
    source->resume_pass(vm.instance_uuid, id, stored);
    ADD_FAILURE() << "the pass resumed although the VM " << what;
  } catch (const SnapshotGone& e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST_F(VmwareSourceTest, PoweringTheVmOnDuringAPassWithoutSnapshotFailsIt) {
  no_snapshot_pass_broken_by([&] { vsphere::power_on(*session, vm); }, "was powered on (it is poweredOn now)");
  // Now on: the next pass takes a snapshot again.
  auto pass = source->open_pass(vm.instance_uuid, stored);
  EXPECT_FALSE(pass->snapshot_id().starts_with(kNoSnapshot)) << pass->snapshot_id();
  EXPECT_GT(pass->snapshot_seconds(), 0.0);
  EXPECT_EQ(vsphere::list_snapshots(*session, vm.ref).size(), 1u);
  pass->close(false);
}

TEST_F(VmwareSourceTest, WritingADiskDuringAPassWithoutSnapshotFailsIt) {
  no_snapshot_pass_broken_by([&] { write_blocks(key2, {7}, 70); },
                             fmt::format("had its disk {} ({}) written", key2, vm.disks[1].file_name));
}

// Off and unchanged, the pass resumes (a VMA restart) without a snapshot on the same
// disks; the VDDK stand-in refuses a powered-on VM's own disk, as VDDK does (locked).
TEST_F(VmwareSourceTest, APassWithoutSnapshotResumesWhileTheVmStaysOffAndVddkRefusesARunningVmsDisk) {
  source = vddk_source();
  write_blocks(key1, {0, 2}, 10);
  pass_and_commit();
  write_blocks(key1, {6}, 60);
  vsphere::power_off(*session, vm);
  std::string id;
  {
    auto pass = source->open_pass(vm.instance_uuid, stored);
    id = pass->snapshot_id();
    pass->close(false);
  }
  auto again = source->resume_pass(vm.instance_uuid, id, stored);
  EXPECT_EQ(again->snapshot_seconds(), 0.0);
  EXPECT_EQ(again->snapshot_id(), id);
  EXPECT_EQ(copy_all(*again)[key1], kBlock);
  EXPECT_NO_THROW(again->check_point_in_time());
  again->close(true);
  expect_targets_match();

  vsphere::power_on(*session, vm);
  VddkParams p;
  p.server = "127.0.0.1";
  p.port = session->port();
  p.user = connect.user;
  p.password_file = std::filesystem::absolute(connect.password_file).string();
  p.thumbprint = session->thumbprint();
  p.vm_moref = vm.ref.value;
  p.file = vm.disks[0].file_name;
  p.libdir = work.file("vddk");
  p.nbdkit = FAKE_NBDKIT_VDDK;
  EXPECT_THROW(DiskReader::start_vddk(p, work.path(), std::chrono::seconds(10)), Error)
      << "the stand-in served a running VM's own disk";
}

}  // namespace
}  // namespace mk::source
