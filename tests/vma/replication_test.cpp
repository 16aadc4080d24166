// Replication through the whole chain: the OMA's jobs API -> the real OMA (volumes,
// nbdkit exports with TLS PSK, job manager) -> HttpVmaClient -> the real `vma` binary
// -> vcsim snapshots and CBT (shim) -> the copy engine -> the OMA's exports. After
// every pass each target's sha256 equals its source's. Also: a guest writing during a
// pass (the pass copies its snapshot, the next one the writes), an export that refuses
// flushes (no change ID committed), two VMs at once and a job stopped mid-copy (a VMA
// killed mid-copy and restarted: resume_test.cpp).
#include "vma_fixture.h"

#include "common/tls.h"
#include "oma/db/migrations.h"
#include "oma/pairing/nbd_client_ca.h"
#include "support/x509.h"
#include "vma/config.h"
#include "vsphere/vm_ops.h"

namespace mk::vma::test {
namespace {

using nlohmann::json;
using protocol::DiskStatus;

// Any disk that reports a change ID has completed (the VMA reports it only then).
void expect_change_ids_only_when_completed(const protocol::JobProgress& p) {
  for (const auto& d : p.disks) {
    if (d.change_id) {
      EXPECT_EQ(d.status, DiskStatus::Completed) << "disk " << d.disk_key;
    }
    if (d.status == DiskStatus::Completed) {
      EXPECT_TRUE(d.change_id.has_value()) << "disk " << d.disk_key;
    }
  }
}

// The value of one sample line of /metrics ("name{labels} value"); -1 when absent.
double metric(const std::string& text, const std::string& sample) {
  auto at = text.find("\n" + sample + " ");
  return at == std::string::npos ? -1 : std::stod(text.substr(at + sample.size() + 2));
}

// How many disks the VMA's log says were copied over `n` NBD connections.
size_t disks_copied_over(const std::string& vma_log, int n) {
  std::string line = fmt::format(" zeroed, {} NBD connection(s)", n);
  size_t count = 0;
  for (size_t at = 0; (at = vma_log.find(line, at)) != std::string::npos; ++at) ++count;
  return count;
}

// The VMA's own record carries the pass's phases (but reporting, which is the OMA's).
void expect_vma_record_has_its_phases(const protocol::JobProgress& p) {
  for (const auto& d : p.disks) {
    ASSERT_EQ(d.phases.size(), 7u) << d.disk_key;
    EXPECT_EQ(d.phases.back().phase, protocol::PassPhase::SnapshotRemoval);
  }
  ASSERT_TRUE(p.ended_seconds_ago.has_value());
  EXPECT_GE(*p.ended_seconds_ago, 0.0);
}

TEST_F(VmaFixture, FullThenIncrementalPassesOfATwoDiskVmThroughTheOma) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 6, 100);
  start_vma();
  start_oma();
  register_vm(vm.instance_uuid);

  std::string job = start_job(vm.instance_uuid, "full");
  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["bytes_done"], j["bytes_total"]);
  for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();
  expect_all_phases_in_order(j);
  expect_targets_match(vm.instance_uuid);
  expect_no_snapshot_left(vm);
  protocol::JobProgress p = client->progress(job);
  ASSERT_EQ(p.disks.size(), 2u);
  expect_change_ids_only_when_completed(p);
  // The job as a whole.
  EXPECT_EQ(p.total.bytes_total, j["bytes_total"].get<int64_t>());
  EXPECT_EQ(p.total.bytes_done, p.total.bytes_total);
  EXPECT_FALSE(p.error);
  EXPECT_TRUE(p.status == protocol::VmaJobStatus::Completed || p.status == protocol::VmaJobStatus::Running)
      << p.status;
  auto stored = oma->repos().vms.list_disks(vm.instance_uuid);
  for (const auto& d : stored) {
    ASSERT_TRUE(d.change_id.has_value()) << "disk " << d.disk_key;
    EXPECT_NE(d.change_id->find('/'), std::string::npos) << "a CBT change ID: " << *d.change_id;
  }

  // Changes on both disks, then on one only: incremental passes from the committed IDs.
  write_block(vm.instance_uuid, vm.disks[0].key, 3, 900);
  write_block(vm.instance_uuid, vm.disks[1].key, 40, 901);
  write_block(vm.instance_uuid, vm.disks[1].key, 41, 902);
  std::string job2 = start_job(vm.instance_uuid, "incremental");
  json j2 = wait_job(job2);
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  expect_all_phases_in_order(j2);
  expect_targets_match(vm.instance_uuid);
  expect_no_snapshot_left(vm);
  expect_vma_record_has_its_phases(client->progress(job2));
  // /metrics sums them per phase: two passes of two disks so far.
  auto m = api->get("/metrics");
  ASSERT_EQ(m.status, 200) << m.raw;
  for (const char* phase : {"snapshot", "copying", "reporting"}) {
    EXPECT_EQ(metric(m.raw, fmt::format("oma_pass_phase_seconds_count{{phase=\"{}\"}}", phase)), 4) << m.raw;
    EXPECT_GE(metric(m.raw, fmt::format("oma_pass_phase_seconds_sum{{phase=\"{}\"}}", phase)), 0) << m.raw;
  }
  // An incremental pass moves the changed blocks, not the disk.
  EXPECT_EQ(j2["bytes_total"].get<int64_t>(), static_cast<int64_t>(3 * kBlock)) << j2.dump(2);

  write_block(vm.instance_uuid, vm.disks[1].key, 7, 903);
  std::string job3 = start_job(vm.instance_uuid, "incremental");
  json j3 = wait_job(job3);
  ASSERT_EQ(j3["status"], "completed") << j3.dump(2);
  expect_targets_match(vm.instance_uuid);
  auto after = oma->repos().vms.list_disks(vm.instance_uuid);
  for (size_t i = 0; i < after.size(); ++i) EXPECT_NE(after[i].change_id, stored[i].change_id);
}

// A powered-off VM (a cutover's final pass) through the whole chain: the pass takes no
// snapshot (the lab's vCenter counts CreateSnapshot calls), its snapshot and snapshot
// removal phases are 0, it copies the blocks written since the last pass, and the OMA
// commits the disks' current change IDs, from which the next pass goes on.
TEST_F(VmaFixture, APoweredOffVmsPassTakesNoSnapshotAndCopiesTheChangesSinceTheLastPass) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 6, 100);
  start_vma();
  start_oma();
  register_vm(vm.instance_uuid);
  json j = wait_job(start_job(vm.instance_uuid, "full"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);

  write_block(vm.instance_uuid, vm.disks[0].key, 3, 900);
  write_block(vm.instance_uuid, vm.disks[1].key, 40, 901);
  vsphere::power_off(*session, vm);
  auto creates = [&] { return lab.shim_stats()["calls"].value("CreateSnapshot_Task", 0); };
  int before = creates();
  std::string job = start_job(vm.instance_uuid, "incremental");
  json j2 = wait_job(job);
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  EXPECT_EQ(creates(), before) << "a powered-off VM's pass took a snapshot";
  EXPECT_EQ(j2["bytes_total"].get<int64_t>(), static_cast<int64_t>(2 * kBlock)) << j2.dump(2);
  expect_all_phases_in_order(j2);
  for (const auto& d : j2["disks"]) {
    for (const auto& p : d["phases"]) {
      if (p["phase"] == "snapshot" || p["phase"] == "snapshot_removal") EXPECT_EQ(p["seconds"], 0.0) << d.dump();
    }
  }
  expect_targets_match(vm.instance_uuid);
  expect_no_snapshot_left(vm);
  auto now = vsphere::describe_vm(*session, vm.ref);
  auto committed = oma->repos().vms.list_disks(vm.instance_uuid);
  for (const auto& d : now.disks) {
    for (const auto& c : committed) {
      if (c.disk_key == std::to_string(d.key)) EXPECT_EQ(c.change_id.value_or(""), d.change_id) << c.disk_key;
    }
  }

  // Still off, nothing written: the next pass moves nothing; on again: a snapshot again.
  json j3 = wait_job(start_job(vm.instance_uuid, "incremental"));
  ASSERT_EQ(j3["status"], "completed") << j3.dump(2);
  EXPECT_EQ(j3["bytes_total"].get<int64_t>(), 0) << j3.dump(2);
  vsphere::power_on(*session, vm);
  write_block(vm.instance_uuid, vm.disks[1].key, 41, 902);
  json j4 = wait_job(start_job(vm.instance_uuid, "incremental"));
  ASSERT_EQ(j4["status"], "completed") << j4.dump(2);
  EXPECT_EQ(creates(), before + 1) << "a powered-on VM's pass must take a snapshot";
  expect_targets_match(vm.instance_uuid);
}

// A guest that keeps writing while a pass copies (the lab's writers, from the test): the
// pass's snapshot froze the disks, so the full pass leaves each volume equal to its disk
// as it was at the snapshot (the frozen content), not to the live disk; the OMA commits
// the snapshot's change IDs, not the VM's (which moved on with the writes); the next
// incremental pass moves exactly the blocks written meanwhile, and the volumes then
// equal the live disks. One disk at a time, so that the second disk is written before
// its copy starts: reading the VM's live files instead of the snapshot would fail here.
TEST_F(VmaFixture, AGuestWritingDuringAPassGetsItsSnapshotAndTheWritesInTheNextPass) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 16, 110);
  std::map<int, std::string> at_snapshot;  // no write between here and the pass's snapshot
  for (auto& [key, flat] : flats.at(vm.instance_uuid)) at_snapshot[key] = mk::test::sha256_file(flat);
  // Each disk holds 1 MiB of data; nbdkit's rate filter lets 2 s of its rate through at
  // once, so at 128 KiB/s each disk takes 6 s more: the second disk's copy is still to
  // come while the test writes and checks the snapshot below, which must still be there.
  // (At 256 KiB/s, 2 s per disk, a loaded machine once took longer than that for the
  // writes and the snapshot queries, and found the pass's snapshot already removed.)
  start_vma({.max_disks_per_vm = 1, .read_rate = "128K"});
  start_oma();
  register_vm(vm.instance_uuid);
  std::string job = start_job(vm.instance_uuid, "full");
  protocol::JobProgress p = wait_vma(job, [](const protocol::JobProgress& p) {
    bool copying = false, pending = false;
    for (const auto& d : p.disks) {
      copying = copying || d.status == DiskStatus::Copying;
      pending = pending || d.status == DiskStatus::Pending;
    }
    return copying && pending;
  });
  // The guest writes: new bytes on block 1 of each disk, block 0 again with the bytes it
  // holds (prepare_vm wrote seed 110 there). The disk still pending is written before
  // its copy begins.
  for (const auto& d : vm.disks) {
    write_block(vm.instance_uuid, d.key, 1, 7000 + d.key);
    write_block(vm.instance_uuid, d.key, 0, 110);
  }
  int waiting = -1;
  for (const auto& d : p.disks) {
    if (d.status == DiskStatus::Pending) waiting = std::stoi(d.disk_key.str());
  }
  ASSERT_NE(waiting, -1) << "no disk was waiting for its copy while the first one copied";
  // The pass's snapshot: its disks are frozen copies, not the VM's files.
  auto snaps = vsphere::list_snapshots(*session, vm.ref);
  ASSERT_EQ(snaps.size(), 1u);
  std::map<int, std::string> snapshot_change_ids;
  for (const auto& d : vsphere::snapshot_disks(*session, snaps[0].ref)) {
    std::string frozen = lab.flat_file(d.file_name);
    EXPECT_NE(frozen, flats.at(vm.instance_uuid).at(d.key));
    EXPECT_EQ(mk::test::sha256_file(frozen), at_snapshot.at(d.key)) << "disk " << d.key << ": the snapshot changed";
    snapshot_change_ids[d.key] = d.change_id;
  }
  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  for (const auto& [key, flat] : flats.at(vm.instance_uuid)) {
    auto vol = oma->repos().storage.find_volume(vm.instance_uuid, std::to_string(key));
    ASSERT_TRUE(vol.has_value());
    EXPECT_EQ(mk::test::sha256_file(vol->device_path), at_snapshot.at(key))
        << "disk " << key << (key == waiting ? " (written before its copy began)" : "")
        << ": the volume is not the disk as it was at the pass's snapshot";
    EXPECT_NE(mk::test::sha256_file(flat), at_snapshot.at(key));
  }
  auto now = vm_at("DC0/vm/DC0_H0_VM0");
  for (const auto& stored : oma->repos().vms.list_disks(vm.instance_uuid)) {
    int key = std::stoi(stored.disk_key);
    EXPECT_EQ(stored.change_id, snapshot_change_ids.at(key)) << "disk " << key << ": not the snapshot's change ID";
    for (const auto& d : now.disks) {
      if (d.key != key) continue;
      EXPECT_NE(d.change_id, snapshot_change_ids.at(key)) << "the VM's change ID stood still";
    }
  }

  json j2 = wait_job(start_job(vm.instance_uuid, "incremental"));
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  EXPECT_EQ(j2["bytes_total"].get<int64_t>(), static_cast<int64_t>(4 * kBlock)) << "two blocks per disk: "
                                                                               << j2.dump(2);
  expect_targets_match(vm.instance_uuid);
  expect_no_snapshot_left(vm);
}

// An OMA serving NBD with X.509 (its NBD router ends TLS and verifies client
// certificates): its replicate requests say x509, and the VMA, which has no PSK, copies
// with a client certificate of the OMA's client CA. This VMA is the OMA's default one
// (--vma-url, not paired), so it holds the OMA's own client certificate (CN "oma"), as
// with PSK it would hold the OMA's key: the router routes it to the OMA's nbdkit, which
// serves every export. A paired VMA's certificate (CN = its id) opens only its own VMs'
// exports (tests/tunnel NbdIsolation).
TEST_F(VmaFixture, AnX509OmaGetsItsDisksFromAVmaWithItsClientCertificate) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 2048, 6, 300);
  std::filesystem::create_directories(dir.file("pki"));
  std::string server_dir = mk::test::make_x509_pki(dir.file("pki")).server;
  std::string pki = dir.file("vma/state/nbd-pki");
  std::filesystem::create_directories(pki);
  {
    // Made beside a database of its own: the OMA finds it in its data directory and
    // adopts it into its database.
    auto db = oma::db::open_database("sqlite:" + dir.file("ca.db"));
    oma::db::migrate(*db);
    oma::SecretBox key(dir.file("ca.key"));
    oma::NbdClientCa ca(dir.file("oma/nbd-x509"), server_dir, *db, key, "");
    for (const char* f : {"client-key.pem", "client-cert.pem"})
      std::filesystem::copy_file(ca.nbdkit_dir() + "/" + f, pki + "/" + f);
    std::filesystem::copy_file(server_dir + "/ca-cert.pem", pki + "/ca-cert.pem");
  }
  start_vma({.certificates_dir = pki});
  start_oma(server_dir);
  register_vm(vm.instance_uuid);
  json j = wait_job(start_job(vm.instance_uuid, "full"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_targets_match(vm.instance_uuid);
  expect_no_snapshot_left(vm);
}

TEST_F(VmaFixture, TwoVmsWithTwoDisksEachAtOnceOverTwoNbdConnectionsEach) {
  auto a = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 32, 10);
  auto b = prepare_vm("DC0/vm/DC0_H0_VM1", 4096, 32, 20);
  // The read rate keeps each copy going for a few seconds, so that concurrency shows.
  start_vma({.max_disks_per_vm = 2, .max_vms = 2, .nbd_connections = 2, .read_rate = "512K"});
  start_oma();
  register_vm(a.instance_uuid);
  register_vm(b.instance_uuid);
  std::string ja = start_job(a.instance_uuid, "full");
  std::string jb = start_job(b.instance_uuid, "full");
  wait_vma(ja, [](const protocol::JobProgress&) { return true; });
  wait_vma(jb, [](const protocol::JobProgress&) { return true; });
  bool both_vms = false, both_disks = false;
  // Moving bytes; and, for two disks of one VM, being copied by a worker (a disk whose
  // data is one extent shows its bytes only when its single request completes).
  auto moving = [](const protocol::JobProgress& p) {
    int n = 0;
    for (const auto& d : p.disks) n += d.status == DiskStatus::Copying && d.bytes_done > 0;
    return n;
  };
  auto copying = [](const protocol::JobProgress& p) {
    int n = 0;
    for (const auto& d : p.disks) n += d.status == DiskStatus::Copying;
    return n;
  };
  for (int i = 0; i < 6000 && !(both_vms && both_disks); ++i) {
    auto pa = client->progress(ja), pb = client->progress(jb);
    expect_change_ids_only_when_completed(pa);
    expect_change_ids_only_when_completed(pb);
    both_vms = both_vms || (moving(pa) > 0 && moving(pb) > 0);
    both_disks = both_disks || copying(pa) == 2 || copying(pb) == 2;
    bool ended = true;
    for (const auto* p : {&pa, &pb}) {
      for (const auto& d : p->disks) ended = ended && (d.status == DiskStatus::Completed || d.status == DiskStatus::Failed);
    }
    if (ended) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(both_vms) << "the two VMs never copied at the same time";
  EXPECT_TRUE(both_disks) << "the two disks of a VM never copied at the same time";
  for (const auto& job : {ja, jb}) {
    json j = wait_job(job);
    EXPECT_EQ(j["status"], "completed") << j.dump(2);
  }
  expect_targets_match(a.instance_uuid);
  expect_targets_match(b.instance_uuid);
  expect_no_snapshot_left(a);
  expect_no_snapshot_left(b);
  // The lab's readers and the OMA's exports allow multi-conn: every disk used both.
  std::string log = mk::test::read_file(vma->log_path());
  EXPECT_EQ(disks_copied_over(log, 2), 4u) << log;
}

// NBD through the VMA's SSH forward (`vma run --nbd-over-ssh`, paired through a real
// sshd): without --nbd-connections each disk copies over the SSH mode's default of
// kNbdConnectionsThroughSsh connections (one ssh channel's window limits one; the lab's
// readers and the OMA's exports allow multi-conn). A VMA whose default is one
// connection whatever the mode copies each disk over 1 and fails this test.
TEST_F(VmaFixture, ThroughTheSshForwardEachDiskCopiesOverTheSshDefaultOfNbdConnections) {
  auto v = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 32, 50);
  std::string vma_id = start_paired_over_ssh();
  register_vm(v.instance_uuid, vma_id);
  json j = wait_job(start_job(v.instance_uuid, "full"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_targets_match(v.instance_uuid);
  std::string log = mk::test::read_file(vma->log_path());
  EXPECT_NE(log.find(fmt::format("NBD connections per disk copy: {} (the default for NBD through the SSH forward",
                                 kNbdConnectionsThroughSsh)),
            std::string::npos)
      << log;
  EXPECT_EQ(disks_copied_over(log, kNbdConnectionsThroughSsh), 2u) << log;
}

// Through the SSH forward too, the operator's --nbd-connections wins over the mode's default.
TEST_F(VmaFixture, ThroughTheSshForwardAnExplicitNbdConnectionsWins) {
  static_assert(kNbdConnectionsThroughSsh != 3, "choose another explicit count than the default");
  auto v = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 32, 60);
  std::string vma_id = start_paired_over_ssh({.nbd_connections = 3});
  register_vm(v.instance_uuid, vma_id);
  json j = wait_job(start_job(v.instance_uuid, "full"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_targets_match(v.instance_uuid);
  std::string log = mk::test::read_file(vma->log_path());
  EXPECT_NE(log.find("NBD connections per disk copy: 3 (--nbd-connections"), std::string::npos) << log;
  EXPECT_EQ(disks_copied_over(log, 3), 2u) << log;
}

// Direct NBD without --nbd-connections: one connection per disk (more gained nothing).
TEST_F(VmaFixture, DirectNbdCopiesOverOneConnectionByDefault) {
  auto v = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 32, 70);
  start_vma();
  start_oma();
  register_vm(v.instance_uuid);
  json j = wait_job(start_job(v.instance_uuid, "full"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  std::string log = mk::test::read_file(vma->log_path());
  EXPECT_NE(log.find("NBD connections per disk copy: 1 (the default for direct NBD"), std::string::npos) << log;
  EXPECT_EQ(disks_copied_over(log, 1), 2u) << log;
}

// Two VMAs on one vCenter: a second VMA's start-up clean-up, over the whole inventory,
// leaves the first one's running pass alone (its snapshot names another owner), and the
// pass completes.
TEST_F(VmaFixture, ASecondVmaOnTheSameVcenterLeavesARunningPassAlone) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 16384, 160, 40);
  start_vma({.read_rate = "2M"});
  start_oma();
  register_vm(vm.instance_uuid);
  std::string job = start_job(vm.instance_uuid, "full");
  wait_vma(job, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) {
      if (d.status == DiskStatus::Copying && d.bytes_done > 0 && d.bytes_done < d.bytes_total) return true;
    }
    return false;
  });
  ASSERT_EQ(our_snapshots(vm), 1) << "a pass holds one snapshot while it copies";
  std::filesystem::create_directories(dir.file("vma2"));
  {
    // Constructed once its API answers: its start-up clean-up has run.
    VmaProcess second(lab, {.state_dir = dir.file("vma2/state"), .token_file = token_file, .psk_file = psk});
    std::string log = mk::test::read_file(second.log_path());
    EXPECT_NE(log.find("start-up: 0 leftover snapshot(s)"), std::string::npos) << log;
    EXPECT_NE(mk::test::read_file(dir.file("vma2/state/snapshot-owner")),
              mk::test::read_file(dir.file("vma/state/snapshot-owner")));
  }
  EXPECT_EQ(our_snapshots(vm), 1) << "the second VMA removed the first one's running pass";
  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_targets_match(vm.instance_uuid);
  expect_no_snapshot_left(vm);
}

TEST_F(VmaFixture, VmaStoppedMidCopyRemovesTheSnapshotBeforeExitingAndReportsTheJobInterrupted) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 16384, 160, 50);
  start_vma({.read_rate = "2M"});
  start_oma();
  register_vm(vm.instance_uuid);
  std::string job = start_job(vm.instance_uuid, "full");
  wait_vma(job, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) {
      if (d.status == DiskStatus::Copying && d.bytes_done > 0 && d.bytes_done < d.bytes_total) return true;
    }
    return false;
  });
  vma->stop();  // SIGTERM, and wait for the exit
  EXPECT_EQ(our_snapshots(vm), 0) << "a stopping VMA removes its passes' snapshots before it exits";
  vma->restart();
  protocol::JobProgress p = client->progress(job);
  bool interrupted = false;
  for (const auto& d : p.disks) {
    EXPECT_NE(d.status, DiskStatus::Copying);
    if (d.status != DiskStatus::Failed) continue;
    EXPECT_TRUE(d.error.value_or("").starts_with("interrupted: the VMA was stopped during this pass")) << *d.error;
    interrupted = true;
  }
  EXPECT_TRUE(interrupted);
  json j = wait_job(job);
  EXPECT_EQ(j["status"], "failed") << j.dump(2);
  for (const auto& d : j["disks"]) EXPECT_FALSE(d["committed"].get<bool>()) << d.dump();
}

TEST_F(VmaFixture, StopMidCopyCancelsAndRemovesTheSnapshot) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 16384, 160, 40);
  start_vma({.read_rate = "2M"});
  start_oma();
  register_vm(vm.instance_uuid);
  std::string job = start_job(vm.instance_uuid, "full");
  wait_vma(job, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) {
      if (d.status == DiskStatus::Copying && d.bytes_done > 0 && d.bytes_done < d.bytes_total) return true;
    }
    return false;
  });
  // Cleanup does not pull the snapshot from under a copy.
  try {
    client->cleanup(vm.instance_uuid);
    ADD_FAILURE() << "cleanup removed the snapshot of a running copy";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 423"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("stop the job first"), std::string::npos) << e.what();
  }
  EXPECT_EQ(our_snapshots(vm), 1);
  auto r = api->post("/api/v1/jobs/" + job + "/cancel", "");
  EXPECT_EQ(r.status, 202) << r.raw;
  json j = wait_job(job);
  EXPECT_EQ(j["status"], "cancelled") << j.dump(2);
  // The VMA stopped the copy and removed the snapshot before answering the stop.
  protocol::JobProgress p = wait_vma(job, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) if (d.status == DiskStatus::Copying || d.status == DiskStatus::Pending) return false;
    return true;
  });
  for (const auto& d : p.disks) {
    if (d.status == DiskStatus::Failed) {
      EXPECT_NE(d.error.value_or("").find("stopped"), std::string::npos) << d.error.value_or("");
    }
  }
  EXPECT_EQ(our_snapshots(vm), 0);
  // Stopping again is harmless.
  EXPECT_NO_THROW(client->stop(job));

  // The VM can be copied again.
  json j2 = wait_job(start_job(vm.instance_uuid, "full"));
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  expect_targets_match(vm.instance_uuid);
}

// `nbdkit` first on PATH for the rest of the test: the OMA's export server ("nbdkit ...
// file dir=EXPORTS", run from PATH as on a site) becomes nbdkit's sh plugin over the same
// directory, which refuses every flush while `refuse_flushes()` holds and notes each
// refusal; any other nbdkit (the VMA's readers) runs unchanged. nbdkit 1.32's error
// filter cannot fail flushes, and the OMA has no knob for this: only the environment.
class FlushRefusingExports {
 public:
  explicit FlushRefusingExports(const mk::test::TempDir& dir)
      : bin_(dir.file("bin")), switch_(dir.file("refuse-flushes")), refusals_(dir.file("flush-refusals")),
        old_path_(std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin") {
    std::filesystem::create_directories(bin_);
    const std::string plugin = dir.file("exports.sh");
    mk::test::write_at(
        plugin, 0,
        "#!/bin/bash\n"
        "# nbdkit sh plugin: the files of $MK_EXPORTS_DIR by export name; flushes fail while a switch exists.\n"
        "f=\"$MK_EXPORTS_DIR/$2\"\n"
        "case \"$1\" in\n"
        "  thread_model) echo parallel ;;\n"
        "  open) [[ \"$3\" =~ ^[A-Za-z0-9._-]+$ && -e \"$MK_EXPORTS_DIR/$3\" ]] || { echo \"ENOENT no export '$3'\" >&2; exit 1; }\n"
        "        echo \"$3\" ;;\n"
        "  get_size) stat -L -c %s \"$f\" ;;\n"
        "  can_write|can_flush|can_multi_conn) exit 0 ;;\n"
        "  pread) dd if=\"$f\" skip=\"$4\" count=\"$3\" iflag=skip_bytes,count_bytes status=none ;;\n"
        "  pwrite) dd of=\"$f\" seek=\"$4\" oflag=seek_bytes conv=notrunc status=none ;;\n"
        "  flush) [ -e " + switch_ + " ] || exit 0\n"
        "         echo \"$2\" >>" + refusals_ + "\n"
        "         echo 'EIO the export storage lost its write cache' >&2; exit 1 ;;\n"
        "  *) exit 2 ;;\n"
        "esac\n");
    const std::string wrapper = bin_ + "/nbdkit";
    mk::test::write_at(wrapper, 0,
                       "#!/bin/bash\n"
                       "# The OMA's export server (file dir=EXPORTS) as the sh plugin " + plugin + "\n"
                       "args=()\n"
                       "while (($#)); do\n"
                       "  if [[ \"$1\" == file && \"${2:-}\" == dir=* ]]; then\n"
                       "    export MK_EXPORTS_DIR=\"${2#dir=}\"; args+=(sh " + plugin + "); shift 2\n"
                       "  else args+=(\"$1\"); shift; fi\n"
                       "done\n"
                       "PATH='" + old_path_ + "' exec nbdkit \"${args[@]}\"\n");
    for (const auto& f : {plugin, wrapper}) std::filesystem::permissions(f, std::filesystem::perms::owner_all);
    ::setenv("PATH", (bin_ + ":" + old_path_).c_str(), 1);
  }
  ~FlushRefusingExports() { ::setenv("PATH", old_path_.c_str(), 1); }
  FlushRefusingExports(const FlushRefusingExports&) = delete;
  FlushRefusingExports& operator=(const FlushRefusingExports&) = delete;

  void refuse_flushes(bool on) {
    if (on) mk::test::write_at(switch_, 0, "on");
    else std::filesystem::remove(switch_);
  }
  // The exports whose flushes were refused, one line per refusal.
  std::string refusals() const { return std::filesystem::exists(refusals_) ? mk::test::read_file(refusals_) : ""; }

 private:
  std::string bin_, switch_, refusals_, old_path_;
};

// The OMA's export storage refuses every flush during an incremental pass: nothing that
// pass wrote is durable, so no disk reports a change ID, the OMA commits none (each
// disk keeps the previous pass's) and the job fails naming the flush (not only the disk
// the failure stopped: the VMA and the OMA once reported that one alone, depending on
// which disk failed first and the order of the answer). Once flushes work
// again, the next pass starts from the old change IDs, moves every change since, and
// the volumes equal the disks.
TEST_F(VmaFixture, AnExportThatRefusesFlushesCommitsNoChangeIdAndTheNextPassRedoesTheWork) {
  FlushRefusingExports exports(dir);  // before the OMA starts its export server
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 1024, 4, 120);
  start_vma();
  start_oma();
  register_vm(vm.instance_uuid);
  json j = wait_job(start_job(vm.instance_uuid, "full"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  expect_targets_match(vm.instance_uuid);
  auto committed = oma->repos().vms.list_disks(vm.instance_uuid);
  for (const auto& d : committed) ASSERT_TRUE(d.change_id.has_value()) << d.disk_key;

  for (const auto& d : vm.disks) write_block(vm.instance_uuid, d.key, 2, 9000 + d.key);
  exports.refuse_flushes(true);
  std::string failing = start_job(vm.instance_uuid, "incremental");
  json f = wait_job(failing);
  EXPECT_EQ(f["status"], "failed") << f.dump(2);
  EXPECT_FALSE(exports.refusals().empty()) << "no flush reached the export";
  // The job names the cause (a flush), not only the disk it stopped.
  EXPECT_NE(f.value("error", "").find("flush failed"), std::string::npos) << f.dump(2);
  for (const auto& d : f["disks"]) EXPECT_FALSE(d["committed"].get<bool>()) << d.dump();
  for (const auto& d : client->progress(failing).disks) {
    EXPECT_FALSE(d.change_id.has_value()) << "disk " << d.disk_key << " reported a change ID its export never flushed";
  }
  auto after = oma->repos().vms.list_disks(vm.instance_uuid);
  ASSERT_EQ(after.size(), committed.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_EQ(after[i].change_id, committed[i].change_id) << after[i].disk_key;
  expect_no_snapshot_left(vm);

  exports.refuse_flushes(false);
  json again = wait_job(start_job(vm.instance_uuid, "incremental"));
  ASSERT_EQ(again["status"], "completed") << again.dump(2);
  EXPECT_EQ(again["bytes_total"].get<int64_t>(), static_cast<int64_t>(2 * kBlock)) << again.dump(2);
  expect_targets_match(vm.instance_uuid);
}

// Without the OMA's export server: the disks fail naming the target, nothing is
// reported completed, and the snapshot is removed.
TEST_F(VmaFixture, AnUnreachableTargetFailsTheDisksWithTheReasonAndLeavesNoSnapshot) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 4, 60);
  start_vma({.max_disks_per_vm = 1});
  protocol::ReplicateRequest req;
  req.job_id = "5e0c7a4b-3f2d-4e1a-9b8c-7d6e5f4a3b2c";
  req.vm_id = vm.instance_uuid;
  req.kind = protocol::PassKind::Full;
  req.nbd = {"127.0.0.1", mk::test::free_tcp_port(), protocol::NbdTls::Psk};  // nothing listens there
  for (const auto& v : client->discover().vms) {
    if (v.vm_id != vm.instance_uuid) continue;
    for (const auto& d : v.disks) {
      req.disks.push_back({d.disk_key, d.unit, d.capacity_bytes, protocol::export_name(v.vm_id, d.unit), std::nullopt});
    }
  }
  ASSERT_EQ(req.disks.size(), 2u);
  EXPECT_FALSE(client->replicate(req).empty());
  EXPECT_EQ(client->replicate(req), client->health().vma_instance) << "the same job again is accepted once";
  protocol::JobProgress p = wait_vma(req.job_id, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) if (d.status != DiskStatus::Failed) return false;
    return true;
  });
  ASSERT_EQ(p.disks.size(), 2u);
  // One disk at a time: the first fails on the target, the second is not started.
  EXPECT_NE(p.disks[0].error.value_or("").find(fmt::format("127.0.0.1:{}", req.nbd.port)), std::string::npos)
      << p.disks[0].error.value_or("");
  EXPECT_NE(p.disks[0].error.value_or("").find("disk " + req.disks[0].disk_key.str()), std::string::npos);
  EXPECT_NE(p.disks[1].error.value_or("").find("not finished: disk " + req.disks[0].disk_key.str()), std::string::npos)
      << p.disks[1].error.value_or("");
  for (const auto& d : p.disks) EXPECT_FALSE(d.change_id.has_value());
  expect_no_snapshot_left(vm);
}

// A disk grown in vCenter after the OMA made the job (sized the target, chose the base):
// the VMA refuses that disk naming both capacities instead of copying into a target that
// is too small or trusting changed areas past the old end.
TEST_F(VmaFixture, ADiskGrownSinceTheJobWasMadeIsRefusedNamingBothCapacities) {
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 4, 70);
  start_vma();
  protocol::ReplicateRequest req;
  req.job_id = "6f1d8b5c-4a3e-4f2b-8c9d-8e7f6a5b4c3d";
  req.vm_id = vm.instance_uuid;
  req.kind = protocol::PassKind::Full;
  // Nothing listens there: the grown disk fails before it is copied.
  req.nbd = {"127.0.0.1", mk::test::free_tcp_port(), protocol::NbdTls::Psk};
  for (const auto& v : client->discover().vms) {
    if (v.vm_id != vm.instance_uuid) continue;
    for (const auto& d : v.disks) {
      req.disks.push_back({d.disk_key, d.unit, d.capacity_bytes, protocol::export_name(v.vm_id, d.unit), std::nullopt});
    }
  }
  ASSERT_EQ(req.disks.size(), 2u);
  const auto grown = vm.disks[1];  // a copy: vm is replaced below
  uint64_t bigger = grown.capacity_bytes + (1 << 20);
  vm = mk::test::grow_lab_disk(*session, vm, grown.key, bigger);
  ASSERT_EQ(vm.disks[1].capacity_bytes, bigger);
  std::filesystem::resize_file(flats.at(vm.instance_uuid).at(grown.key), bigger);
  client->replicate(req);
  protocol::JobProgress p = wait_vma(req.job_id, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) if (d.status != DiskStatus::Failed) return false;
    return true;
  });
  bool seen = false;
  for (const auto& d : p.disks) {
    if (d.disk_key != protocol::DiskKey(grown.key)) continue;
    seen = true;
    std::string error = d.error.value_or("");
    EXPECT_NE(error.find(fmt::format("capacity is {} bytes now, the job was made for {} bytes", bigger,
                                     grown.capacity_bytes)),
              std::string::npos)
        << error;
    EXPECT_FALSE(d.change_id.has_value());
  }
  EXPECT_TRUE(seen);
  expect_no_snapshot_left(vm);
}

}  // namespace
}  // namespace mk::vma::test
