// Boot checks through the OMA's API without qemu: the request, record and validation
// paths of POST/GET /api/v1/vms/{id}/boot-check with the guest tools replaced by test
// doubles (BootCheckConfig::inspect/run), around a real OMA, real local volumes and a
// strict fake VMA for the passes. What the real tools do (conversion, boot, screenshot,
// replicas untouched) is tests/guest's GuestCutover.BootCheckThroughTheApi...
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <thread>

#include "common/units.h"
#include "fake_vma.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/migratekit_runner.h"

namespace mk::oma {
namespace {

using nlohmann::json;

// The guest tools' doubles: an inspection that finds Debian on disk 0, and a boot check
// that answers `result` once released (or at once), recording what it was given.
struct FakeGuestTools {
  std::mutex mu;
  std::condition_variable cv;
  bool hold = false;          // run() waits until release() (or its cancel flag)
  bool started = false;
  bool saw_cancel = false;
  std::vector<guest::DiskImage> images;
  guest::BootCheckOptions options;
  guest::BootCheckResult result;

  FakeGuestTools() {
    result.booted = true;
    result.converted = true;
    result.accel = "tcg";
    result.reason = "12 journal entries since the boot started; Reached target multi-user.target";
    result.seconds = 31.5;
    result.conversion_seconds = 87.25;
    result.console_tail = "\x1b[0;32m  OK  \x1b[0m Reached target Multi-User System.\r\nmk-lab-guest login: \xff";
    result.screenshot = std::string("\x89PNG\r\n\x1a\n", 8) + std::string(100, '\x01');
    result.screenshot_format = "png";
    result.evidence.journal_written = result.evidence.target_reached = true;
    result.evidence.target = "Reached target multi-user.target";
    result.evidence.detail = "12 journal entries";
  }
  void install(OmaConfig& c) {
    c.boot_check.inspect = [](const std::vector<guest::DiskImage>&, const guest::InspectOptions&) {
      guest::GuestInspection g;
      g.os_found = g.convertible = true;
      g.os_family = "linux";
      g.distro = "debian";
      g.version = "12.12";
      g.root_device = "/dev/sda1";
      g.boot_disk = 0;
      g.firmware = "bios";
      g.seconds = 0.5;
      return g;
    };
    c.boot_check.run = [this](const std::vector<guest::DiskImage>& disks, const guest::BootCheckOptions& o) {
      std::unique_lock lock(mu);
      images = disks;
      options = o;
      started = true;
      cv.notify_all();
      // The cancel flag is an atomic nobody notifies about: look at it often.
      for (int i = 0; i < 2400 && hold && !(o.cancel && o.cancel->load()); ++i)
        cv.wait_for(lock, std::chrono::milliseconds(50));
      guest::BootCheckResult r = result;
      if (o.cancel && o.cancel->load()) {
        saw_cancel = true;
        r = {};
        r.cancelled = true;
      }
      return r;
    };
  }
  void wait_started() {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return started; }));
  }
  void release() {
    std::lock_guard lock(mu);
    hold = false;
    cv.notify_all();
  }
};

struct BootCheckApi : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-bootcheck"};
  std::unique_ptr<test::FakeVma> vma;
  FakeGuestTools tools;
  OmaConfig config;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<test::ApiClient> api;
  const std::string vm = test::test_vm_uuid(0xb0);

  void SetUp() override {
    std::filesystem::create_directories(dir.file("data"));  // the OMA's own NBD key: the fake writes what it reports
    vma = std::make_unique<test::FakeVma>(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
    vma->set_auto_complete(true);
    config = test::test_config(dir.file("data"), vma->url());
    tools.install(config);
    oma = std::make_unique<Oma>(config);
    oma->start();
    api = std::make_unique<test::ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
    ASSERT_EQ(api->post("/api/v1/vms", test::vm_body(vm, 1, MiB).dump()).status, 201);
  }
  void TearDown() override {
    if (vma) EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
  }
  json pass(const std::string& kind) {
    auto r = api->post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", kind}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return test::wait_for_job(*api, r.body.value("job_id", ""), test::job_ended);
  }
  std::string status() { return api->get("/api/v1/vms/" + vm).body.value("status", ""); }
};

TEST_F(BootCheckApi, AVmWithoutReplicasIsRefusedWithAClearMessage) {
  auto r = api->post("/api/v1/vms/" + vm + "/boot-check", "");
  EXPECT_EQ(r.status, 409) << r.raw;
  const std::string error = r.body.value("error", "");
  EXPECT_NE(error.find("has no replica of disk 2000"), std::string::npos) << error;
  EXPECT_NE(error.find("run a full replication first"), std::string::npos) << error;
  EXPECT_EQ(api->post("/api/v1/vms/" + test::test_vm_uuid(0xb1) + "/boot-check", "").status, 404);
  EXPECT_EQ(api->post("/api/v1/vms/not-a-uuid/boot-check", "").status, 400);
  auto none = api->get("/api/v1/vms/" + vm + "/boot-check");
  EXPECT_EQ(none.status, 404) << none.raw;
  EXPECT_NE(none.body.value("error", "").find("no boot check yet"), std::string::npos) << none.raw;
  EXPECT_TRUE(api->get("/api/v1/vms/" + vm).body["boot_check"].is_null());
  EXPECT_FALSE(tools.started);
}

// A running check holds the VM: a second check and a pass are refused meanwhile; its
// result is stored with the VM and shown by GET .../boot-check, the VM and the list.
TEST_F(BootCheckApi, ResultIsStoredAndShownAndTheVmIsHeldWhileItRuns) {
  ASSERT_EQ(pass("full")["status"], "completed");
  tools.hold = true;
  auto started = api->post("/api/v1/vms/" + vm + "/boot-check", "");
  ASSERT_EQ(started.status, 202) << started.raw;
  const std::string job = started.body["job_id"];
  tools.wait_started();
  EXPECT_EQ(status(), "boot_checking");
  auto second = api->post("/api/v1/vms/" + vm + "/boot-check", "");
  EXPECT_EQ(second.status, 409) << second.raw;
  EXPECT_NE(second.body.value("error", "").find("has an active job " + job), std::string::npos) << second.raw;
  EXPECT_EQ(api->post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", "incremental"}}.dump()).status, 409);
  tools.release();
  json j = test::wait_for_job(*api, job, test::job_ended);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["kind"], "boot_check");
  EXPECT_EQ(status(), "replicated");

  // The replica itself, read-only, with the overlays in the OMA's own directory.
  auto volume = oma->repos().storage.find_volume(vm, "2000");
  ASSERT_EQ(tools.images.size(), 1u);
  EXPECT_EQ(tools.images[0].path, volume->device_path);
  EXPECT_EQ(tools.images[0].format, "raw");
  EXPECT_EQ(tools.options.scratch_parent, dir.file("data/boot-checks"));
  EXPECT_NE(tools.options.cancel, nullptr);

  auto r = api->get("/api/v1/vms/" + vm + "/boot-check");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["job_id"], job);
  EXPECT_EQ(r.body["booted"], true);
  EXPECT_EQ(r.body["started_by"], "api");
  EXPECT_EQ(r.body["conversion_seconds"], 87.25);
  EXPECT_EQ(r.body["boot_seconds"], 31.5);
  EXPECT_EQ(r.body["os"], "debian 12.12");
  EXPECT_EQ(r.body["evidence"]["target_reached"], true);
  // Escape sequences and carriage returns gone, an invalid UTF-8 byte replaced.
  EXPECT_EQ(r.body["console_tail"], "  OK   Reached target Multi-User System.\nmk-lab-guest login: ?");
  EXPECT_EQ(r.body["screenshot_format"], "png");
  EXPECT_EQ(r.body["screenshot_base64"].get<std::string>().substr(0, 12), "iVBORw0KGgoB");
  json detail = api->get("/api/v1/vms/" + vm).body;
  EXPECT_EQ(detail["boot_check"]["job_id"], job);
  EXPECT_FALSE(detail["boot_check"].contains("screenshot_base64"));
  json listed = api->get("/api/v1/vms").body["vms"][0];
  EXPECT_EQ(listed["boot_check"]["booted"], true);
  EXPECT_FALSE(listed["boot_check"].contains("console_tail"));
  // This OMA does not convert at cutover: the conversion is not part of the downtime.
  EXPECT_TRUE(listed["predicted_conversion_seconds"].is_null());
}

TEST_F(BootCheckApi, AGuestThatDoesNotBootFailsTheJobAndIsStored) {
  ASSERT_EQ(pass("full")["status"], "completed");
  tools.result.booted = false;
  tools.result.reason = "the guest did not boot: 0 journal entries since the boot started";
  auto started = api->post("/api/v1/vms/" + vm + "/boot-check", "");
  ASSERT_EQ(started.status, 202) << started.raw;
  json j = test::wait_for_job(*api, started.body["job_id"], test::job_ended);
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  EXPECT_NE(j["error"].get<std::string>().find("0 journal entries"), std::string::npos) << j["error"];
  EXPECT_EQ(status(), "replicated");
  json r = api->get("/api/v1/vms/" + vm + "/boot-check").body;
  EXPECT_EQ(r["booted"], false);
  EXPECT_EQ(r["reason"], tools.result.reason);
  // Replication goes on as before.
  EXPECT_EQ(pass("incremental")["status"], "completed");
}

// Stopping the OMA mid-check cancels it (the tools see their cancel flag), fails its job
// and stores no result; the VM is replicated again.
TEST_F(BootCheckApi, OmaStopMidCheckCancelsItAndFailsItsJob) {
  ASSERT_EQ(pass("full")["status"], "completed");
  tools.hold = true;
  auto started = api->post("/api/v1/vms/" + vm + "/boot-check", "");
  ASSERT_EQ(started.status, 202) << started.raw;
  const std::string job = started.body["job_id"];
  tools.wait_started();
  oma->stop();
  EXPECT_TRUE(tools.saw_cancel);
  JobRecord j = oma->repos().jobs.get_job(job);
  EXPECT_EQ(j.status, JobStatus::Failed);
  EXPECT_NE(j.error.value_or("").find("the OMA is stopping"), std::string::npos) << j.error.value_or("");
  EXPECT_EQ(oma->repos().vms.get_vm(vm).status, VmStatus::Replicated);
  EXPECT_FALSE(oma->repos().boot_checks.find(vm));
}

// An OMA killed during a check (its job still active, overlays left in DATA/boot-checks):
// the next start fails the job saying so, the VM is replicated again, the overlays go.
TEST_F(BootCheckApi, AnOmaRestartedDuringACheckFailsItAndTheVmIsReplicatedAgain) {
  ASSERT_EQ(pass("full")["status"], "completed");
  api.reset();
  oma->stop();
  JobRecord job;
  job.job_id = "5b0c7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e";
  job.vm_id = vm;
  job.kind = JobKind::BootCheck;
  job.status = JobStatus::Running;
  job.phase = "converting overlays of the replicas, then booting them";
  job.created_at = now_ms();
  oma->repos().jobs.create_job(job, {});
  oma->repos().vms.set_vm_status(vm, VmStatus::BootChecking);
  const std::string left = dir.file("data/boot-checks/mk-guest-bootcheck-AbC123");
  std::filesystem::create_directories(left);
  mk::test::create_sparse_file(left + "/disk0.qcow2", MiB);
  oma.reset();
  oma = std::make_unique<Oma>(config);
  oma->start();
  JobRecord after = oma->repos().jobs.get_job(job.job_id);
  for (int i = 0; i < 500 && !is_terminal(after.status); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = oma->repos().jobs.get_job(job.job_id);
  }
  EXPECT_EQ(after.status, JobStatus::Failed);
  EXPECT_NE(after.error.value_or("").find("the OMA restarted during this boot check"), std::string::npos)
      << after.error.value_or("");
  EXPECT_EQ(oma->repos().vms.get_vm(vm).status, VmStatus::Replicated);
  EXPECT_FALSE(std::filesystem::exists(left));
  EXPECT_FALSE(tools.started);
}

// `migratekit boot-check VM`: refused with the API's message, then run, waited for and
// printed, the screenshot written where asked.
TEST_F(BootCheckApi, CliRunsACheckWaitsAndPrintsTheResult) {
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--api", "http://127.0.0.1:" + std::to_string(oma->api_port()), "--token-file",
                             dir.file("data/admin.token"), "--interval-ms", "50"});
    return mk::test::run_migratekit(args);
  };
  auto early = cli({"boot-check", vm});
  EXPECT_EQ(early.exit_code, 2) << early.out;  // the API's 409, one line
  EXPECT_NE(early.err.find("run a full replication first"), std::string::npos) << early.err;
  ASSERT_EQ(pass("full")["status"], "completed");
  const std::string picture = dir.file("screen.png");
  auto run = cli({"boot-check", vm, "--screenshot", picture});
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("booted:      yes"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("conversion:  87 s"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("mk-lab-guest login:"), std::string::npos) << run.out;
  EXPECT_EQ(mk::test::read_file(picture), tools.result.screenshot);
  tools.result.booted = false;
  tools.result.reason = "the guest did not boot: 0 journal entries since the boot started";
  auto failed = cli({"boot-check", vm});
  EXPECT_EQ(failed.exit_code, 1) << failed.out;
  EXPECT_NE(failed.out.find("booted:      NO"), std::string::npos) << failed.out;
}

TEST_F(BootCheckApi, RunsAfterEachIncrementalPassOnlyWhenTheSettingIsOn) {
  ASSERT_EQ(pass("full")["status"], "completed");
  ASSERT_EQ(pass("incremental")["status"], "completed");
  EXPECT_FALSE(tools.started) << "off by default";
  auto bad = api->put("/api/v1/settings/boot_check.after_incremental", json{{"value", "yes"}}.dump());
  EXPECT_EQ(bad.status, 400) << bad.raw;
  ASSERT_EQ(api->put("/api/v1/settings/boot_check.after_incremental", json{{"value", "true"}}.dump()).status, 200);
  ASSERT_EQ(pass("full")["status"], "completed");  // a full pass starts none
  EXPECT_FALSE(tools.started);
  ASSERT_EQ(pass("incremental")["status"], "completed");
  // Started on the pass's thread right after the pass ended: look for it a little while.
  std::string job;
  json checks;
  for (int i = 0; i < 500 && job.empty(); ++i) {
    checks = api->get("/api/v1/jobs?vm_id=" + vm).body["jobs"];
    for (const auto& c : checks)
      if (c["kind"] == "boot_check") job = c["job_id"];
    if (job.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_FALSE(job.empty()) << checks.dump(2);
  EXPECT_EQ(test::wait_for_job(*api, job, test::job_ended)["status"], "completed");
  EXPECT_EQ(api->get("/api/v1/vms/" + vm + "/boot-check").body["started_by"], "after_incremental");
}

}  // namespace
}  // namespace mk::oma
