// The schema and the data-access layer on SQLite: migrations, invariants that the
// schema enforces (one active job per VM, one volume per disk, unique exports), and
// change IDs committed all-or-nothing.
#include <gtest/gtest.h>

#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "oma/db/store.h"
#include "oma/errors.h"
#include "store_scenarios.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

VmRecord vm(const std::string& id) {
  VmRecord v;
  v.vm_id = id;
  v.name = "vm-" + id.substr(0, 4);
  v.vcenter = "vcenter.lab";
  v.datacenter = "DC1";
  v.cpus = 2;
  v.memory_mb = 4096;
  v.guest_os = "debian12_64Guest";
  v.power_state = "poweredOn";
  return v;
}

std::vector<DiskRecord> disks(int n) {
  std::vector<DiskRecord> out;
  for (int i = 0; i < n; ++i) {
    DiskRecord d;
    d.disk_key = std::to_string(2000 + i);
    d.unit = i;
    d.label = "Hard disk " + std::to_string(i + 1);
    d.capacity_bytes = (i + 1) * 1048576;
    out.push_back(d);
  }
  return out;
}

JobRecord job(const std::string& job_id, const std::string& vm_id) {
  JobRecord j;
  j.job_id = job_id;
  j.vm_id = vm_id;
  j.kind = "full";
  j.status = "preparing";
  j.phase = "preparing";
  j.created_at = now_ms();
  return j;
}

std::vector<JobDiskRecord> job_disks_for(const std::string& job_id, int n) {
  std::vector<JobDiskRecord> out;
  for (int i = 0; i < n; ++i) {
    JobDiskRecord d;
    d.job_id = job_id;
    d.disk_key = std::to_string(2000 + i);
    d.unit = i;
    d.export_name = "";
    out.push_back(d);
  }
  return out;
}

const std::string kVm1 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d";
const std::string kVm2 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5e";

// Each scenario runs on a freshly migrated database: SQLite here, MariaDB in
// mariadb_test.cpp (the same scenarios, through the same Store).

void MigrationsApplyOnceAndRecordTheirVersion(db::Database& database, Store& store) {
  EXPECT_EQ(db::schema_version(database), db::migrations().back().version);
  EXPECT_EQ(db::migrate(database), 0);  // second start: nothing to do
}

void RefusesADatabaseFromANewerOma(db::Database& database, Store& store) {
  database.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)");
  EXPECT_THROW(db::migrate(database), Error);
}

void VmWithDisksRoundTrips(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(2));
  VmRecord v = store.get_vm(kVm1);
  EXPECT_EQ(v.name, vm(kVm1).name);
  EXPECT_EQ(v.memory_mb, 4096);
  EXPECT_FALSE(v.current_job_id);
  auto d = store.list_disks(kVm1);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].disk_key, "2001");
  EXPECT_EQ(d[1].capacity_bytes, 2 * 1048576);
  EXPECT_THROW(store.add_vm(vm(kVm1), disks(1)), Conflict);
  EXPECT_THROW(store.get_vm(kVm2), NotFound);
}

void DuplicateDiskUnitRejectedAndNothingStored(db::Database& database, Store& store) {
  auto d = disks(2);
  d[1].unit = 0;
  EXPECT_THROW(store.add_vm(vm(kVm1), d), Conflict);
  EXPECT_FALSE(store.find_vm(kVm1));  // the transaction rolled back
}

void OneActiveJobPerVmButConcurrentJobsForDifferentVms(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(1));
  store.add_vm(vm(kVm2), disks(1));
  store.create_job(job("job-1", kVm1), job_disks_for("job-1", 1));
  EXPECT_THROW(store.create_job(job("job-2", kVm1), job_disks_for("job-2", 1)), Conflict);
  EXPECT_FALSE(store.find_job("job-2"));
  store.create_job(job("job-3", kVm2), job_disks_for("job-3", 1));
  EXPECT_EQ(store.active_jobs().size(), 2u);
  EXPECT_EQ(store.get_vm(kVm1).current_job_id.value_or(""), "job-1");

  store.finish_job("job-1", "failed", "test failure");
  EXPECT_FALSE(store.get_vm(kVm1).current_job_id);
  EXPECT_EQ(store.get_job("job-1").error.value_or(""), "test failure");
  store.create_job(job("job-4", kVm1), job_disks_for("job-4", 1));  // the VM is free again
  EXPECT_EQ(store.active_jobs().size(), 2u);
}

void VolumeAndExportIdentityIsUnique(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(2));
  VolumeRecord v{"vol-1", kVm1, "2000", "local", "/data/vol-1.img", "ready", 1048576, now_ms()};
  store.insert_volume(v);
  EXPECT_EQ(store.find_volume(kVm1, "2000")->volume_id, "vol-1");
  VolumeRecord again = v;
  again.volume_id = "vol-2";
  EXPECT_THROW(store.insert_volume(again), Conflict);  // one volume per (VM, disk key)

  ExportRecord e{"migration-vm-" + kVm1 + "-disk0", "vol-1", "/data/vol-1.img", "nbdkit", 1048576, now_ms(), {}};
  store.insert_export(e, kVm1, 0, "2000");
  EXPECT_EQ(store.export_for(kVm1, 0).value_or(""), e.export_name);
  ExportRecord same_volume = e;
  same_volume.export_name = "migration-vm-" + kVm1 + "-disk1";
  EXPECT_THROW(store.insert_export(same_volume, kVm1, 1, "2001"), Conflict);  // two disks, one volume: refused
  EXPECT_FALSE(store.export_for(kVm1, 1));
  EXPECT_EQ(store.list_disks(kVm1)[0].export_name.value_or(""), e.export_name);
}

void ChangeIdsCommitOnlyWhenEveryDiskCompleted(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(2));
  store.create_job(job("job-1", kVm1), job_disks_for("job-1", 2));
  auto d = store.job_disks("job-1");
  d[0].status = "completed";
  d[0].change_id_new = "52 3c ... /1";
  store.update_disk_progress(d[0]);
  EXPECT_THROW(store.commit_change_ids("job-1"), Error);  // disk 2001 is still pending
  EXPECT_FALSE(store.list_disks(kVm1)[0].change_id);     // nothing committed, not even disk 2000

  d[1].status = "completed";
  d[1].change_id_new = "52 3c ... /2";
  store.update_disk_progress(d[1]);
  store.commit_change_ids("job-1");
  store.commit_change_ids("job-1");  // idempotent (recovery may commit again)
  EXPECT_EQ(store.list_disks(kVm1)[1].change_id.value_or(""), "52 3c ... /2");
  auto h = store.cbt_history(kVm1, "2000");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].second, "52 3c ... /1");
}

void ProgressRollsUpFromDisks(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(2));
  store.create_job(job("job-1", kVm1), job_disks_for("job-1", 2));
  auto d = store.job_disks("job-1");
  d[0].bytes_done = 100;
  d[0].bytes_total = 1000;
  d[0].eta_seconds = 5;
  d[1].bytes_done = 50;
  d[1].bytes_total = 500;
  d[1].eta_seconds = 9;
  store.update_disk_progress(d[0]);
  store.update_disk_progress(d[1]);
  store.roll_up_progress("job-1");
  JobRecord j = store.get_job("job-1");
  EXPECT_EQ(j.bytes_done, 150);
  EXPECT_EQ(j.bytes_total, 1500);
  EXPECT_DOUBLE_EQ(j.eta_seconds, 9);
}

void StepsEventsTokensSettings(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(1));
  store.create_job(job("job-1", kVm1), job_disks_for("job-1", 1));
  int64_t s1 = store.begin_step("job-1", "preparing");
  store.end_step("job-1", s1, "completed");
  int64_t s2 = store.begin_step("job-1", "exporting");
  EXPECT_EQ(s2, s1 + 1);
  store.add_event("job-1", "info", "first");
  store.add_event("job-1", "warn", "second");
  auto ev = store.list_events("job-1");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1].message, "second");
  EXPECT_EQ(store.list_steps("job-1")[1].status, "running");

  store.insert_token({"tok-1", "admin", "admin", now_ms(), {}}, std::string(64, 'a'));
  EXPECT_TRUE(store.find_live_token(std::string(64, 'a')));
  store.revoke_token("tok-1");
  EXPECT_FALSE(store.find_live_token(std::string(64, 'a')));
  EXPECT_THROW(store.revoke_token("tok-1"), NotFound);

  store.put_setting("cloudstack.url", "http://cs", false);
  store.put_setting("cloudstack.url", "http://cs2", false);
  EXPECT_EQ(store.get_setting("cloudstack.url")->first, "http://cs2");
}

// Cutover's records: a VM's NICs, what a failover built, and job kinds longer than the
// first schema allowed ("test_failover_cleanup": MariaDB enforces column widths).
void NicsFailoversAndCutoverJobKinds(db::Database& database, Store& store) {
  store.add_vm(vm(kVm1), disks(1));
  store.set_vm_nics(kVm1, {{kVm1, "4001", "00:50:56:aa:bb:02", "Backup"}, {kVm1, "4000", "00:50:56:aa:bb:01", "VM Network"}});
  auto nics = store.list_nics(kVm1);
  ASSERT_EQ(nics.size(), 2u);
  EXPECT_EQ(nics[0].nic_key, "4000");
  EXPECT_EQ(nics[1].network, "Backup");
  EXPECT_THROW(store.set_vm_nics(kVm1, {{kVm1, "4000", "a", "x"}, {kVm1, "4000", "b", "y"}}), Conflict);
  EXPECT_EQ(store.list_nics(kVm1).size(), 2u);  // the failed replacement rolled back

  JobRecord j = job("job-1", kVm1);
  j.kind = "test_failover_cleanup";
  j.status = "running";
  store.create_job(j, {});
  EXPECT_EQ(store.get_job("job-1").kind, "test_failover_cleanup");

  store.put_failover({kVm1, "test_failover", "job-1", "vm-in-cloudstack", R"({"snapshots":{}})", 0});
  auto f = store.find_failover(kVm1, "test_failover");
  ASSERT_TRUE(f);
  EXPECT_EQ(f->target_vm_id, "vm-in-cloudstack");
  EXPECT_GT(f->created_at, 0);
  EXPECT_FALSE(store.find_failover(kVm1, "cutover"));
  store.delete_failover(kVm1, "test_failover");
  EXPECT_FALSE(store.find_failover(kVm1, "test_failover"));
}

// Pairing codes are single-use and expire; VMAs get distinct tunnel ports from the base
// (a revoked VMA keeps its port); states move only forward; a VM records its VMA.
void VmasEnrolOnceWithDistinctPortsAndOwnTheirVms(db::Database& database, Store& store) {
  const int64_t now = 1'000'000;
  for (const char* h : {"code-a", "code-b", "code-old"})
    store.insert_pairing_code({h, "v1:sealed", now - 10, std::string(h) == "code-old" ? now - 1 : now + 1000,
                               std::nullopt, std::nullopt, std::string("v1:psk")});
  VmaRecord in;
  in.name = "site-a";
  in.vcenter = "vc-a";
  in.ssh_public_key = "ssh-ed25519 AAAA";
  in.vma_id = "vma-a";
  VmaRecord a = store.enroll_vma("code-a", now, in, 9081);
  EXPECT_EQ(a.tunnel_port, 9081);
  EXPECT_EQ(a.state, "pending");
  EXPECT_EQ(a.api_token_sealed, "v1:sealed");
  EXPECT_EQ(store.get_vma("vma-a").nbd_psk_sealed, "v1:psk");
  in.vma_id = "vma-a2";
  EXPECT_THROW(store.enroll_vma("code-a", now, in, 9081), Conflict);   // used
  EXPECT_THROW(store.enroll_vma("code-old", now, in, 9081), Conflict); // expired
  EXPECT_THROW(store.enroll_vma("code-x", now, in, 9081), Conflict);   // unknown
  EXPECT_FALSE(store.find_vma("vma-a2"));
  in.vma_id = "vma-b";
  EXPECT_EQ(store.enroll_vma("code-b", now, in, 9081).tunnel_port, 9082);
  ASSERT_EQ(store.list_vmas().size(), 2u);

  store.set_vma_state("vma-a", "approved");
  EXPECT_TRUE(store.get_vma("vma-a").approved_at);
  EXPECT_THROW(store.set_vma_state("vma-a", "approved"), Conflict);
  store.set_vma_state("vma-a", "revoked");
  EXPECT_THROW(store.set_vma_state("vma-a", "approved"), Conflict);
  EXPECT_THROW(store.set_vma_state("vma-a", "revoked"), Conflict);
  EXPECT_THROW(store.get_vma("nope"), NotFound);

  store.add_vm(vm("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001"), disks(1));
  EXPECT_FALSE(store.vm_vma("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001"));
  store.set_vm_vma("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001", std::string("vma-b"));
  EXPECT_EQ(store.vm_vma("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001"), "vma-b");
  EXPECT_THROW(store.vm_vma("4210a4c2-6b57-4d4b-9d8e-0c1f2a3bffff"), NotFound);
}

}  // namespace

const std::vector<std::pair<std::string, StoreScenario>>& store_scenarios() {
  static const std::vector<std::pair<std::string, StoreScenario>> all = {
      {"MigrationsApplyOnceAndRecordTheirVersion", MigrationsApplyOnceAndRecordTheirVersion},
      {"RefusesADatabaseFromANewerOma", RefusesADatabaseFromANewerOma},
      {"VmWithDisksRoundTrips", VmWithDisksRoundTrips},
      {"DuplicateDiskUnitRejectedAndNothingStored", DuplicateDiskUnitRejectedAndNothingStored},
      {"OneActiveJobPerVmButConcurrentJobsForDifferentVms", OneActiveJobPerVmButConcurrentJobsForDifferentVms},
      {"VolumeAndExportIdentityIsUnique", VolumeAndExportIdentityIsUnique},
      {"ChangeIdsCommitOnlyWhenEveryDiskCompleted", ChangeIdsCommitOnlyWhenEveryDiskCompleted},
      {"ProgressRollsUpFromDisks", ProgressRollsUpFromDisks},
      {"StepsEventsTokensSettings", StepsEventsTokensSettings},
      {"NicsFailoversAndCutoverJobKinds", NicsFailoversAndCutoverJobKinds},
      {"VmasEnrolOnceWithDistinctPortsAndOwnTheirVms", VmasEnrolOnceWithDistinctPortsAndOwnTheirVms},
  };
  return all;
}

namespace {

class SqliteStore : public ::testing::TestWithParam<size_t> {};

TEST_P(SqliteStore, Scenario) {
  test::TempDir dir("mk-oma-store");
  db::SqliteDatabase database(dir.file("oma.db"));
  db::migrate(database);
  Store store(database);
  store_scenarios()[GetParam()].second(database, store);
}

INSTANTIATE_TEST_SUITE_P(Store, SqliteStore, ::testing::Range<size_t>(0, store_scenarios().size()),
                         [](const auto& info) { return store_scenarios()[info.param].first; });

TEST(SqliteStore, ReopenedDatabaseNeedsNoMigration) {
  test::TempDir dir("mk-oma-store");
  { db::SqliteDatabase a(dir.file("oma.db")); EXPECT_EQ(db::migrate(a), static_cast<int>(db::migrations().size())); }
  db::SqliteDatabase b(dir.file("oma.db"));
  EXPECT_EQ(db::migrate(b), 0);
}

}  // namespace
}  // namespace mk::oma
