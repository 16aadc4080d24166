// Replication jobs end to end inside one OMA: real volumes and nbdkit exports, a strict
// fake VMA that runs real `migratekit copy` processes (or scripted progress), the REST
// API in front. Jobs complete only when every disk completed and its change ID is
// committed; VMA restarts, lost jobs and silence become clear failures; cancellation;
// one active job per VM; 8 VMs x 2 disks at once. Progress pushed by a VMA that holds
// the OMA's calls (long polls): recorded and streamed without a poll interval.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <signal.h>

#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "common/units.h"
#include "oma/gui/event_hub.h"
#include "engine/nbd_connection.h"
#include "fake_vma.h"
#include "oma/names.h"
#include "oma_service.h"
#include "support/eventually.h"
#include "support/files.h"
#include "support/nbdkit_server.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::ApiClient;
using test::disk_state;

struct JobsService {
  mk::test::TempDir dir{"mk-oma-jobs"};
  std::string psk;
  test::FakeVma vma;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<ApiClient> api;

  explicit JobsService(int vma_timeout_s = 30, const std::function<void(OmaConfig&)>& configure = {})
      : psk(dir.file("data/nbd-psk.keys")), vma((std::filesystem::create_directories(dir.file("data")), make_psk())) {
    OmaConfig c = test::test_config(dir.file("data"), vma.url());
    c.vma_timeout_s = vma_timeout_s;
    if (configure) configure(c);
    oma = std::make_unique<Oma>(c);
    oma->start();
    api = std::make_unique<ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
  }
  std::string make_psk() { return mk::test::make_psk_file(psk, "oma"); }

  void add_vm(const std::string& id, int disks, int64_t capacity) {
    auto r = api->post("/api/v1/vms", test::vm_body(id, disks, capacity).dump());
    ASSERT_EQ(r.status, 201) << r.raw;
  }
  std::string start(const std::string& id, const std::string& kind) {
    auto r = api->post("/api/v1/jobs", json{{"vm_id", id}, {"kind", kind}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body.value("job_id", "");
  }
  // Waits until the fake VMA has the job (the OMA sent replicate).
  void wait_replicated(const std::string& job_id) {
    for (int i = 0; i < 3000 && !vma.knows(job_id); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(vma.knows(job_id));
  }
  void wait_polls(int n) {
    int target = vma.polls() + n;
    for (int i = 0; i < 3000 && vma.polls() < target; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_GE(vma.polls(), target);
  }
};

TEST(Jobs, FullThenIncrementalCopyRealDataAndCommitChangeIds) {
  JobsService s;
  const int64_t size = 4 * MiB;
  std::vector<std::string> images;
  std::vector<std::unique_ptr<mk::test::NbdkitServer>> sources;
  for (int i = 0; i < 2; ++i) {
    images.push_back(s.dir.file(fmt::format("src{}.img", i)));
    mk::test::create_sparse_file(images[i], size);
    mk::test::write_random_at(images[i], i * MiB, 1 * MiB, 10 + i);
    sources.push_back(std::make_unique<mk::test::NbdkitServer>(mk::test::NbdkitOptions{.args = {"file=" + images[i]}}));
    s.vma.set_source(std::to_string(2000 + i), sources[i]->uri());
  }
  std::string vm = test::test_vm_uuid(1);
  s.add_vm(vm, 2, size);

  std::string job = s.start(vm, "full");
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["bytes_done"], j["bytes_total"]);
  for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();
  auto disks = s.oma->repos().vms.list_disks(vm);
  for (int i = 0; i < 2; ++i) {
    auto vol = s.oma->repos().storage.find_volume(vm, disks[i].disk_key);
    EXPECT_TRUE(mk::test::files_identical(images[i], vol->device_path));
    EXPECT_EQ(disks[i].change_id.value_or(""), "cbt-" + job + "-" + disks[i].disk_key);
  }

  // Second pass: new data on disk 1, incremental from the committed change IDs, same
  // volumes and exports.
  mk::test::write_random_at(images[1], 3 * MiB, 64 * KiB, 99);
  std::string job2 = s.start(vm, "incremental");
  json j2 = test::wait_for_job(*s.api, job2, test::job_ended);
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  EXPECT_TRUE(mk::test::files_identical(images[1], s.oma->repos().storage.find_volume(vm, "2001")->device_path));
  auto reqs = s.vma.replicate_requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[1].disks[0].change_id_base.value_or(""), "cbt-" + job + "-2000");
  EXPECT_EQ(reqs[0].disks[1].export_name, reqs[1].disks[1].export_name);
  EXPECT_EQ(s.oma->repos().storage.list_volumes().size(), 2u);
  EXPECT_EQ(s.oma->repos().jobs.cbt_history(vm, "2000").size(), 2u);
  EXPECT_TRUE(s.vma.violations().empty()) << s.vma.violations()[0];
}

TEST(Jobs, CompletesOnlyWhenEveryDiskCompleted) {
  JobsService s;
  s.add_vm(test::test_vm_uuid(2), 2, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(2), "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));
  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Copying, 1000, MiB));
  s.wait_polls(3);
  json j = s.api->get("/api/v1/jobs/" + job).body;
  EXPECT_EQ(j["status"], "copying") << j.dump(2);
  EXPECT_FALSE(s.oma->repos().vms.list_disks(test::test_vm_uuid(2))[0].change_id);  // nothing committed yet

  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Completed, MiB, MiB, "cbt-b"));
  j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(s.oma->repos().vms.list_disks(test::test_vm_uuid(2))[1].change_id.value_or(""), "cbt-b");
  auto progress = s.api->get("/api/v1/jobs/" + job + "/progress");
  EXPECT_EQ(progress.status, 200);
  EXPECT_EQ(progress.body["bytes_done"], 2 * MiB);
}

// The phases of each disk as the job API shows them: (name, seconds).
std::vector<std::pair<std::string, double>> api_phases(const json& job, size_t disk) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& p : job["disks"][disk]["phases"]) out.emplace_back(p["phase"], p["seconds"]);
  return out;
}

TEST(Jobs, PhaseTimesAreStoredAsTheVmaReportsThemAndTheOmaAddsReporting) {
  using protocol::PassPhase;
  JobsService s;
  s.add_vm(test::test_vm_uuid(3), 2, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(3), "full");
  s.wait_replicated(job);
  auto copying = disk_state("2000", protocol::DiskStatus::Copying, 1000, MiB);
  copying.phases = {{PassPhase::Snapshot, 1.5}, {PassPhase::ChangeQuery, 0.25}, {PassPhase::ReaderStart, 0.125}};
  s.vma.set_disk(job, copying);
  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Pending, 0, MiB));
  s.wait_polls(3);
  json j = s.api->get("/api/v1/jobs/" + job).body;
  using Phases = std::vector<std::pair<std::string, double>>;
  EXPECT_EQ(api_phases(j, 0), (Phases{{"snapshot", 1.5}, {"change_query", 0.25}, {"reader_start", 0.125}}));
  EXPECT_TRUE(api_phases(j, 1).empty());

  std::vector<protocol::PhaseTime> all = {{PassPhase::Snapshot, 1.5}, {PassPhase::ChangeQuery, 0.25},
                                          {PassPhase::ReaderStart, 0.125}, {PassPhase::Planning, 0.0625},
                                          {PassPhase::Copying, 4.0}, {PassPhase::Flushing, 0.5},
                                          {PassPhase::SnapshotRemoval, 0.75}};
  for (const char* key : {"2000", "2001"}) {
    auto done = disk_state(key, protocol::DiskStatus::Completed, MiB, MiB, std::string("cbt-") + key);
    done.phases = all;
    s.vma.set_disk(job, done);
  }
  j = test::wait_for_job(*s.api, job, test::job_ended);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  for (size_t disk : {0u, 1u}) {
    Phases got = api_phases(j, disk);
    ASSERT_EQ(got.size(), 8u) << j.dump(2);
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(got[i], Phases::value_type(enum_name(all[i].phase), all[i].seconds));
    EXPECT_EQ(got[7].first, "reporting");
    EXPECT_GE(got[7].second, 0.0);
  }
}

TEST(Jobs, FailedDiskFailsTheJobAndCommitsNothing) {
  JobsService s;
  s.add_vm(test::test_vm_uuid(3), 2, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(3), "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));
  protocol::DiskProgress failed = disk_state("2001", protocol::DiskStatus::Failed, 10, MiB);
  failed.error = "snapshot removed under us";
  s.vma.set_disk(job, failed);
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_NE(j["error"].get<std::string>().find("snapshot removed under us"), std::string::npos) << j["error"];
  EXPECT_FALSE(s.oma->repos().vms.list_disks(test::test_vm_uuid(3))[0].change_id);
}

// A VM that the VMA's preflight refuses (an independent disk, snapshots of its own):
// the job fails naming every finding before any volume or export exists, and the VMA
// is never asked to replicate.
// The VMA marks a failed disk before it stops the others, so the answer that reports the
// failure may still show another disk copying; the OMA stops polling then. Every disk of
// the ended job is still in an end state, the stopped one saying why.
TEST(Jobs, ADiskStoppedByAnotherDisksFailureEndsFailedSayingWhy) {
  JobsService s;
  s.add_vm(test::test_vm_uuid(9), 2, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(9), "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Copying, 1000, MiB));
  protocol::DiskProgress failed = disk_state("2001", protocol::DiskStatus::Failed, 10, MiB);
  failed.error = "NBD write failed";
  s.vma.set_disk(job, failed);
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  EXPECT_EQ(j["disks"][0]["status"], "failed") << j.dump(2);
  EXPECT_EQ(j["disks"][0]["phase"], "failed") << j.dump(2);
  EXPECT_EQ(j["disks"][0]["error"], "stopped: disk 2001 failed") << j.dump(2);
  EXPECT_EQ(j["disks"][0]["throughput_bps"], 0.0) << j.dump(2);
  EXPECT_EQ(j["disks"][1]["status"], "failed") << j.dump(2);
  EXPECT_EQ(j["disks"][1]["error"], "NBD write failed") << j.dump(2);
}

TEST(Jobs, APreflightFindingFailsTheJobBeforeAnythingIsCreated) {
  JobsService s;
  const std::string vm = test::test_vm_uuid(4);
  s.vma.add_source_vm(vm, "web01");
  s.vma.set_findings(vm, {{"independent-disk", protocol::DiskKey(2001), "its mode is independent_persistent",
                           "set the disk's mode to Dependent", "VM web01 disk Hard disk 2: independent"},
                          {"existing-snapshots", std::nullopt, "it has 1 snapshot(s)", "delete them",
                           "VM web01: snapshots of its own"}});
  s.add_vm(vm, 2, 1 * MiB);
  std::string job = s.start(vm, "full");
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "failed");
  std::string error = j["error"];
  EXPECT_NE(error.find("VM web01 disk Hard disk 2: independent"), std::string::npos) << error;
  EXPECT_NE(error.find("VM web01: snapshots of its own"), std::string::npos) << error;
  EXPECT_NE(error.find("this job created nothing"), std::string::npos) << error;
  EXPECT_TRUE(s.oma->repos().storage.list_volumes().empty());
  EXPECT_FALSE(s.vma.knows(job));
  EXPECT_TRUE(s.vma.replicate_requests().empty());

  // Once the VM is fixed, a job goes through.
  s.vma.set_findings(vm, {});
  s.vma.set_auto_complete(true);
  json k = test::wait_for_job(*s.api, s.start(vm, "full"), test::job_ended);
  EXPECT_EQ(k["status"], "completed") << k.dump();
}

// A disk grown in vCenter after a pass: the next pass grows its volume first and copies
// that disk in full (no base change ID), the other disk stays incremental. Each pass
// reads its one VM from the VMA (GET /api/v1/vms/{id}), never the whole inventory.
TEST(Jobs, AGrownDiskGetsItsVolumeGrownAndAFullPass) {
  JobsService s;
  const std::string vm = test::test_vm_uuid(7);
  auto disks = [](int64_t second) {
    return std::vector<protocol::DiscoveredDisk>{{protocol::DiskKey(2000), 0, "Hard disk 1", MiB},
                                                 {protocol::DiskKey(2001), 1, "Hard disk 2", second}};
  };
  s.vma.add_source_vm(vm, "web01");
  s.vma.set_source_disks(vm, disks(MiB));
  s.add_vm(vm, 2, MiB);
  s.vma.set_auto_complete(true);
  json full = test::wait_for_job(*s.api, s.start(vm, "full"), test::job_ended);
  ASSERT_EQ(full["status"], "completed") << full.dump();

  s.vma.set_source_disks(vm, disks(3 * MiB));
  json inc = test::wait_for_job(*s.api, s.start(vm, "incremental"), test::job_ended);
  ASSERT_EQ(inc["status"], "completed") << inc.dump();
  protocol::ReplicateRequest sent = s.vma.replicate_requests().back();
  EXPECT_EQ(sent.kind, protocol::PassKind::Incremental);
  for (const auto& d : sent.disks) {
    if (d.disk_key == protocol::DiskKey(2001)) {
      EXPECT_FALSE(d.change_id_base) << d.disk_key;
      EXPECT_EQ(d.capacity_bytes, 3 * MiB) << d.disk_key;
    } else {
      EXPECT_TRUE(d.change_id_base) << d.disk_key;
    }
  }
  auto grown = s.oma->repos().storage.find_volume(vm, "2001");
  ASSERT_TRUE(grown.has_value());
  EXPECT_EQ(grown->size_bytes, 3 * MiB);
  EXPECT_EQ(std::filesystem::file_size(grown->device_path), uint64_t(3 * MiB));
  EXPECT_EQ(s.oma->repos().storage.find_volume(vm, "2000")->size_bytes, MiB);
  EXPECT_EQ(s.vma.discover_calls(), 0) << "a pass listed the whole inventory to learn one VM's disks";
}

// A VMA that holds the OMA's progress calls (protocol 6) and an OMA whose poll interval
// and database scan for the event stream are an hour: whatever is recorded or streamed
// below came without either.
struct PushedJobs : JobsService {
  PushedJobs()
      : JobsService(30, [](OmaConfig& c) {
          c.poll_interval_ms = 3600 * 1000;
          c.events_poll_ms = 3600 * 1000;
        }) {
    vma.hold_progress(true);
  }
  // Until the OMA's next progress call is held: it has taken the change made before.
  void wait_for_a_held_poll() {
    int held = vma.held_polls();
    ASSERT_TRUE(mk::test::eventually([&] { return vma.held_polls() > held; })) << "the OMA made no progress call";
  }
};

TEST(Jobs, ADisksCompletionIsRecordedWithoutWaitingForAPollInterval) {
  PushedJobs s;
  s.add_vm(test::test_vm_uuid(5), 2, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(5), "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Copying, 4096, MiB));
  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Completed, MiB, MiB, "cbt-b"));
  json j = test::wait_for_job(*s.api, job, [](const json& j) { return j["disks"][1]["status"] == "completed"; });
  ASSERT_EQ(j["disks"][1]["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["disks"][1]["bytes_done"], MiB) << "a disk's end is recorded with its final bytes";
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));
  j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["bytes_done"], 2 * MiB);
  EXPECT_GT(s.vma.held_polls(), 0);
  EXPECT_TRUE(s.vma.violations().empty());
}

TEST(Jobs, AVmaThatRestartsAndResumesIsFollowedThoughItsRevisionStartsAgain) {
  PushedJobs s;
  s.add_vm(test::test_vm_uuid(6), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(6), "full");
  s.wait_replicated(job);
  // Several changes: the OMA's revision is well past what the restarted VMA counts.
  for (int64_t done : {4096, 8192, 16384, 32768}) {
    s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Copying, done, MiB));
    s.wait_for_a_held_poll();
  }
  s.vma.restart_resuming();
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "completed") << j.dump(2);
  bool noted = false;
  for (const auto& e : s.oma->repos().jobs.list_events(job)) noted |= e.message.find("VMA restarted") != std::string::npos;
  EXPECT_TRUE(noted) << "the new VMA instance was not noticed";
  EXPECT_TRUE(s.vma.violations().empty());
}

// Cancel while the VMA holds the OMA's call: the call is ended (not counted as an error
// of the VMA), the VMA told to stop, the job cancelled.
TEST(Jobs, ACancelEndsAHeldProgressCall) {
  PushedJobs s;
  s.add_vm(test::test_vm_uuid(8), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(8), "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Copying, 4096, MiB));
  s.wait_for_a_held_poll();
  ASSERT_EQ(s.api->post("/api/v1/jobs/" + job + "/cancel", "").status, 202);
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "cancelled") << j.dump(2);
  auto stopped = s.vma.stopped_jobs();
  EXPECT_NE(std::find(stopped.begin(), stopped.end(), job), stopped.end());
  EXPECT_EQ(s.oma->jobs().poller_errors(), 0u) << "the ended call was taken for a VMA that failed";
}

// The frames of the event stream until one satisfies `want` (at most 60 s of frames).
std::vector<std::string> frames_until(gui::EventHub::Subscription& sub, const std::function<bool(const std::string&)>& want) {
  std::vector<std::string> all;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < end) {
    auto f = sub.next(std::chrono::milliseconds(200));
    if (!f) break;
    for (auto& frame : *f) {
      all.push_back(frame);
      if (want(frame)) return all;
    }
  }
  ADD_FAILURE() << "no such frame among " << all.size();
  return all;
}

TEST(Jobs, TheEventStreamGetsAPhaseChangeFromTheJobManagerWithoutAScan) {
  PushedJobs s;
  s.add_vm(test::test_vm_uuid(7), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(7), "full");
  s.wait_replicated(job);
  auto sub = s.oma->events().subscribe();
  auto is_job = [&](const std::string& f, const std::string& has) {
    return f.rfind("event: job\n", 0) == 0 && f.find(job) != std::string::npos && f.find(has) != std::string::npos;
  };
  auto copying = disk_state("2000", protocol::DiskStatus::Copying, 12345, MiB);
  copying.phase = protocol::DiskPhase::Verifying;
  s.vma.set_disk(job, copying);
  frames_until(*sub, [&](const std::string& f) { return is_job(f, "\"phase\":\"verifying\""); });
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));
  // The job's end, then its last event, which the JobManager records after it.
  auto rest = frames_until(*sub, [](const std::string& f) {
    return f.rfind("event: log\n", 0) == 0 && f.find("job completed") != std::string::npos;
  });
  EXPECT_TRUE(std::any_of(rest.begin(), rest.end(), [&](const std::string& f) {
    if (!is_job(f, "")) return false;
    return json::parse(f.substr(f.find("data: ") + 6))["status"] == "completed";
  })) << "no frame of the completed job";
  s.oma->events().unsubscribe(sub);
}

TEST(Jobs, VmaRestartFailsTheJobWithTheReason) {
  JobsService s;
  s.add_vm(test::test_vm_uuid(4), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(4), "full");
  s.wait_replicated(job);
  s.wait_polls(1);
  s.vma.restart();
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_NE(j["error"].get<std::string>().find("no longer knows"), std::string::npos) << j["error"];
  // The VM is free again for a new job.
  EXPECT_EQ(s.api->post("/api/v1/jobs", json{{"vm_id", test::test_vm_uuid(4)}, {"kind", "full"}}.dump()).status, 201);
}

// A VMA of a newer protocol version: the OMA refuses its answer, the job fails saying
// which versions met and that the OMA is the one to upgrade, and nothing was started.
TEST(Jobs, AVmaOfAnotherProtocolVersionFailsTheJobNamingBothVersions) {
  JobsService s;
  const int newer = protocol::kVersion + 1;
  s.vma.speak_version(newer);
  s.add_vm(test::test_vm_uuid(8), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(8), "full");
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "failed");
  std::string error = j["error"];
  EXPECT_NE(error.find(fmt::format("the VMA speaks protocol version {} and this OMA speaks version {}", newer,
                                   protocol::kVersion)),
            std::string::npos)
      << error;
  EXPECT_NE(error.find("upgrade the OMA"), std::string::npos) << error;
  EXPECT_FALSE(s.vma.knows(job));
  // The fake refused the request the same way.
  auto v = s.vma.violations();
  ASSERT_EQ(v.size(), 1u);
  EXPECT_NE(v[0].find(fmt::format("the OMA speaks protocol version {}", protocol::kVersion)), std::string::npos) << v[0];
  auto health = s.api->get("/api/v1/vma/health");
  EXPECT_EQ(health.body["status"], "unreachable") << health.raw;
  EXPECT_NE(health.body.value("error", "").find("upgrade the OMA"), std::string::npos) << health.raw;
}

TEST(Jobs, SilentVmaFailsTheJobAfterTheTimeout) {
  JobsService s(1);
  s.add_vm(test::test_vm_uuid(5), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(5), "full");
  s.wait_replicated(job);
  s.vma.go_silent();
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "failed");
  EXPECT_NE(j["error"].get<std::string>().find("no progress from the VMA"), std::string::npos) << j["error"];
  EXPECT_GT(s.oma->jobs().poller_errors(), 0u);
  auto m = s.api->get("/metrics");
  EXPECT_NE(m.raw.find("oma_poller_errors_total "), std::string::npos);
  EXPECT_EQ(m.raw.find("oma_poller_errors_total 0\n"), std::string::npos) << m.raw;
}

TEST(Jobs, CancelStopsTheVmaAndEndsCancelled) {
  JobsService s;
  s.add_vm(test::test_vm_uuid(6), 1, 1 * MiB);
  std::string job = s.start(test::test_vm_uuid(6), "full");
  s.wait_replicated(job);
  EXPECT_EQ(s.api->post("/api/v1/jobs/" + job + "/cancel", "").status, 202);
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "cancelled");
  auto stopped = s.vma.stopped_jobs();
  EXPECT_EQ(std::count(stopped.begin(), stopped.end(), job), 1);
  EXPECT_EQ(s.api->post("/api/v1/jobs/" + job + "/cancel", "").status, 409);  // already ended
  for (const auto& d : j["disks"]) {
    EXPECT_EQ(d["status"], "failed") << d.dump();
    EXPECT_EQ(d["error"], "stopped: the job was cancelled") << d.dump();
  }
}

TEST(Jobs, OneActiveJobPerVmAndIncrementalNeedsAFullFirst) {
  JobsService s;
  s.add_vm(test::test_vm_uuid(7), 1, 1 * MiB);
  auto r = s.api->post("/api/v1/jobs", json{{"vm_id", test::test_vm_uuid(7)}, {"kind", "incremental"}}.dump());
  EXPECT_EQ(r.status, 400) << r.raw;
  std::string job = s.start(test::test_vm_uuid(7), "full");
  r = s.api->post("/api/v1/jobs", json{{"vm_id", test::test_vm_uuid(7)}, {"kind", "full"}}.dump());
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_NE(r.body["error"].get<std::string>().find(job), std::string::npos);
  r = s.api->post("/api/v1/jobs", json{{"vm_id", test::test_vm_uuid(99)}, {"kind", "full"}}.dump());
  EXPECT_EQ(r.status, 404) << r.raw;
}

TEST(Jobs, EightVmsTimesTwoDisksAtOnce) {
  JobsService s;
  s.vma.set_auto_complete(true);
  std::vector<std::string> jobs;
  for (int i = 0; i < 8; ++i) s.add_vm(test::test_vm_uuid(200 + i), 2, 1 * MiB);
  for (int i = 0; i < 8; ++i) jobs.push_back(s.start(test::test_vm_uuid(200 + i), "full"));
  std::set<std::string> exports, volumes;
  for (const auto& job : jobs) {
    json j = test::wait_for_job(*s.api, job, test::job_ended);
    ASSERT_EQ(j["status"], "completed") << j.dump(2);
    for (const auto& d : j["disks"]) exports.insert(d["export"].get<std::string>());
  }
  auto listed = s.api->get("/api/v1/volumes");
  for (const auto& v : listed.body["volumes"]) volumes.insert(v["device_path"].get<std::string>());
  EXPECT_EQ(exports.size(), 16u);
  EXPECT_EQ(volumes.size(), 16u);
  EXPECT_EQ(s.api->get("/api/v1/exports").body["exports"].size(), 16u);
  EXPECT_TRUE(s.vma.violations().empty());
}


// --- The OMA checks what the VMA reports (issue 13, finding 3) ---------------------------
// A disk reported completed counts only when its export's server saw at least the
// bytes the VMA says it copied, written and flushed since the pass started.

// Writes and flushes `bytes` at offset 0 of the job's disk `unit` export, as a VMA's
// earlier run of the pass did before it was interrupted.
void write_to_export(JobsService& s, const std::string& job, size_t unit, uint64_t bytes) {
  protocol::ReplicateRequest req;
  for (const auto& r : s.vma.replicate_requests()) {
    if (r.job_id == job) req = r;
  }
  ASSERT_GT(req.disks.size(), unit);
  Endpoint e{fmt::format("nbds://{}:{}/{}", req.nbd.host, req.nbd.port, req.disks[unit].export_name), {s.psk, ""},
             "target"};
  auto c = engine::NbdConnection::open(e);
  std::vector<char> buf(bytes, 'r');
  c->pwrite(buf.data(), buf.size(), 0);
  c->flush();
}

TEST(Jobs, AVmaReportingADiskCompletedWithoutWritingItFailsTheJobAndCommitsNothing) {
  JobsService s;
  std::string vm = test::test_vm_uuid(40);
  s.add_vm(vm, 2, 1 * MiB);
  std::string job = s.start(vm, "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));  // honest
  s.wait_polls(2);
  s.vma.lie(test::FakeVma::Lie::Unwritten);
  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Completed, MiB, MiB, "cbt-b"));
  json j = test::wait_for_job(*s.api, job, test::job_ended);
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  std::string error = j["error"];
  for (const std::string& part : std::vector<std::string>{"disk 2001 of VM vm-" + vm.substr(32),
                                                          "the VMA's report could not be verified",
                                                          "1048576 bytes copied", "saw only 0 bytes", "Check the VMA",
                                                          "run the pass again"}) {
    EXPECT_NE(error.find(part), std::string::npos) << part << " in: " << error;
  }
  EXPECT_EQ(error.find("disk 2000"), std::string::npos) << error;  // the honest disk checked out
  for (const auto& d : s.oma->repos().vms.list_disks(vm)) EXPECT_FALSE(d.change_id) << d.disk_key;
  EXPECT_TRUE(s.oma->repos().jobs.cbt_history(vm, "2000").empty());
  for (const auto& d : s.oma->repos().jobs.job_disks(job)) {
    EXPECT_FALSE(d.committed) << d.disk_key;
    if (d.disk_key == "2001") {
      EXPECT_EQ(d.status, protocol::DiskStatus::Failed);
      EXPECT_NE(d.error.value_or("").find("could not be verified"), std::string::npos);
    }
  }
  EXPECT_TRUE(s.vma.violations().empty()) << s.vma.violations()[0];
}

// A one-disk full pass of VM `vm` whose VMA reports `reported` for the disk; `meanwhile`
// runs once the VMA has the job, before the report. Returns the ended job.
json one_disk_pass(JobsService& s, const std::string& vm, int64_t capacity, const protocol::DiskProgress& reported,
                   const std::function<void(const std::string& job)>& meanwhile = {}) {
  s.add_vm(vm, 1, capacity);
  std::string job = s.start(vm, "full");
  s.wait_replicated(job);
  if (meanwhile) meanwhile(job);
  s.vma.set_disk(job, reported);
  return test::wait_for_job(*s.api, job, test::job_ended);
}

TEST(Jobs, AVmaThatWroteLessThanItReportsFailsTheJob) {
  JobsService s;
  std::string vm = test::test_vm_uuid(41);
  s.vma.lie(test::FakeVma::Lie::Half);
  json j = one_disk_pass(s, vm, 2 * MiB, disk_state("2000", protocol::DiskStatus::Completed, 2 * MiB, 2 * MiB, "cbt-a"));
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  std::string error = j["error"];
  EXPECT_NE(error.find("2097152 bytes copied"), std::string::npos) << error;
  EXPECT_NE(error.find("saw only 1048576 bytes"), std::string::npos) << error;
  EXPECT_FALSE(s.oma->repos().vms.list_disks(vm)[0].change_id);
}

// A VMA cannot escape the check by calling every byte resumed: resumed bytes were
// written in this pass too, by its earlier run.
TEST(Jobs, AVmaClaimingEveryByteResumedWithoutWritingFailsTheJob) {
  JobsService s;
  std::string vm = test::test_vm_uuid(42);
  auto done = disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a");
  done.bytes_resumed = MiB;
  json j = one_disk_pass(s, vm, MiB, done);
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  EXPECT_NE(j["error"].get<std::string>().find("(1048576 of them resumed)"), std::string::npos) << j["error"];
  EXPECT_FALSE(s.oma->repos().vms.list_disks(vm)[0].change_id);
}

// A pass resumed after an interruption: its earlier run wrote and flushed half the disk,
// then the export server restarted (killed: its supervisor starts a new one), then the
// resumed run wrote the rest. The count survived the restart, so the pass commits.
TEST(Jobs, AResumedPassIsAcceptedAcrossAnExportServerRestart) {
  JobsService s;
  std::string vm = test::test_vm_uuid(43);
  auto done = disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a");
  done.bytes_resumed = MiB / 2;
  json j = one_disk_pass(s, vm, MiB, done, [&](const std::string& job) {
    write_to_export(s, job, 0, MiB / 2);
    pid_t old = s.oma->export_server().server_pid();
    ASSERT_EQ(::kill(old, SIGKILL), 0);
    for (int i = 0; i < 3000 && (s.oma->export_server().restarts() == 0 || s.oma->export_server().server_pid() == old);
         ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_NE(s.oma->export_server().server_pid(), old);
  });
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(s.oma->repos().vms.list_disks(vm)[0].change_id.value_or(""), "cbt-a");
  auto disks = s.oma->repos().jobs.job_disks(j["job_id"]);
  ASSERT_EQ(disks.size(), 1u);
  ASSERT_TRUE(disks[0].written_baseline);
  EXPECT_GE(*s.oma->export_server().written_bytes(disks[0].export_name) - *disks[0].written_baseline, MiB);
}

// An honest pass with nothing to copy (an incremental with no change): 0 reported, 0
// seen, committed.
TEST(Jobs, AnHonestPassThatCopiedNothingCommits) {
  JobsService s;
  std::string vm = test::test_vm_uuid(44);
  json j = one_disk_pass(s, vm, MiB, disk_state("2000", protocol::DiskStatus::Completed, 0, 0, "cbt-a"));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(s.oma->repos().vms.list_disks(vm)[0].change_id.value_or(""), "cbt-a");
}

}  // namespace
}  // namespace mk::oma
