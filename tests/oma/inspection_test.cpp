// Guest inspections through the OMA's API without libguestfs: POST/GET
// /api/v1/vms/{id}/inspection, the "guest" summary of the VM list and detail, the
// automatic inspection after passes, and the inspections a boot check stores, with
// virt-inspector replaced by a test double (InspectionConfig::inspect,
// BootCheckConfig::inspect) around a real OMA, real local volumes and a strict fake VMA.
// What the real virt-inspector finds on the lab's guest is tests/guest's.
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

// virt-inspector's double: Debian on the second disk (UEFI), or no OS, or a tool that
// fails; held until released when asked, recording what it was given.
struct FakeInspector {
  std::mutex mu;
  std::condition_variable cv;
  bool hold = false;
  int runs = 0;
  bool saw_cancel = false;
  bool no_os = false;
  std::string fail_with;
  std::vector<guest::DiskImage> images;
  guest::InspectOptions options;

  guest::GuestInspection inspect(const std::vector<guest::DiskImage>& disks, const guest::InspectOptions& o) {
    std::unique_lock lock(mu);
    images = disks;
    options = o;
    ++runs;
    cv.notify_all();
    // The cancel flag is an atomic nobody notifies about: look at it often.
    for (int i = 0; i < 2400 && hold && !(o.cancel && o.cancel->load()); ++i)
      cv.wait_for(lock, std::chrono::milliseconds(50));
    if (o.cancel && o.cancel->load()) {
      saw_cancel = true;
      throw Error("virt-inspector stopped: cancelled");
    }
    if (!fail_with.empty()) throw Error(fail_with);
    guest::GuestInspection g;
    g.seconds = 19.75;
    if (no_os) {
      g.reason = "no operating system was found on the disks (a data disk, or a disk that is not an OS)";
      return g;
    }
    g.os_found = g.convertible = true;
    g.os_family = "linux";
    g.distro = "debian";
    g.version = "12.12";
    g.product_name = "Debian GNU/Linux 12 (bookworm)";
    g.osinfo = "debian12";
    g.root_device = "/dev/sdb1";
    g.boot_disk = 1;
    g.firmware = "uefi";
    return g;
  }
  void install(OmaConfig& c) {
    c.inspection.inspect = [this](const auto& disks, const auto& o) { return inspect(disks, o); };
  }
  void wait_runs(int n) {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(60), [&] { return runs >= n; }));
  }
  void release() {
    std::lock_guard lock(mu);
    hold = false;
    cv.notify_all();
  }
};

struct InspectionApi : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-inspect"};
  std::unique_ptr<test::FakeVma> vma;
  FakeInspector tools;
  OmaConfig config;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<test::ApiClient> api;
  const std::string vm = test::test_vm_uuid(0xc0);

  void SetUp() override {
    std::filesystem::create_directories(dir.file("data"));  // the OMA's own NBD key: the fake writes what it reports
    vma = std::make_unique<test::FakeVma>(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
    vma->set_auto_complete(true);
    vma->add_source_vm(vm, "web01", true);
    config = test::test_config(dir.file("data"), vma->url());
    tools.install(config);
  }
  void start(bool convert_guests = false) {
    config.cutover.convert_guests = convert_guests;
    oma = std::make_unique<Oma>(config);
    oma->start();
    api = std::make_unique<test::ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
    ASSERT_EQ(api->post("/api/v1/vms", test::vm_body(vm, 2, MiB).dump()).status, 201);
  }
  void TearDown() override {
    if (vma) {
      EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
    }
  }
  json pass(const std::string& kind) {
    auto r = api->post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", kind}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return test::wait_for_job(*api, r.body.value("job_id", ""), test::job_ended);
  }
  json inspect() {
    auto r = api->post("/api/v1/vms/" + vm + "/inspection", "");
    EXPECT_EQ(r.status, 202) << r.raw;
    return test::wait_for_job(*api, r.body.value("job_id", ""), test::job_ended);
  }
  std::string status() { return api->get("/api/v1/vms/" + vm).body.value("status", ""); }
  // The VM's inspection jobs, newest first.
  std::vector<std::string> inspection_jobs() {
    std::vector<std::string> out;
    const json jobs = api->get("/api/v1/jobs?vm_id=" + vm).body["jobs"];  // kept: not a temporary's member
    for (const auto& j : jobs)
      if (j["kind"] == "inspection") out.push_back(j["job_id"]);
    return out;
  }
};

TEST_F(InspectionApi, AVmWithoutReplicasIsRefusedAndNoneIsShownBeforeTheFirst) {
  start();
  auto r = api->post("/api/v1/vms/" + vm + "/inspection", "");
  EXPECT_EQ(r.status, 409) << r.raw;
  const std::string error = r.body.value("error", "");
  EXPECT_NE(error.find("has no replica of disk 2000"), std::string::npos) << error;
  EXPECT_NE(error.find("run a full replication first"), std::string::npos) << error;
  EXPECT_EQ(api->post("/api/v1/vms/" + test::test_vm_uuid(0xc1) + "/inspection", "").status, 404);
  EXPECT_EQ(api->post("/api/v1/vms/not-a-uuid/inspection", "").status, 400);
  auto none = api->get("/api/v1/vms/" + vm + "/inspection");
  EXPECT_EQ(none.status, 404) << none.raw;
  EXPECT_NE(none.body.value("error", "").find("has not been inspected yet"), std::string::npos) << none.raw;
  EXPECT_TRUE(api->get("/api/v1/vms/" + vm).body["guest"].is_null());
  EXPECT_TRUE(api->get("/api/v1/vms").body["vms"][0]["guest"].is_null());
  EXPECT_EQ(tools.runs, 0);
}

// A running inspection holds the VM (a second one and a pass are refused); its result,
// with the boot disk's key and vSphere's firmware, is stored and shown by GET
// .../inspection and as the "guest" of the VM and the list.
TEST_F(InspectionApi, ResultIsStoredAndShownAndTheVmIsHeldWhileItRuns) {
  start();
  vma->set_firmware(vm, "efi", true);
  ASSERT_EQ(pass("full")["status"], "completed");
  EXPECT_EQ(tools.runs, 0) << "guest conversion is off: no inspection after passes";
  tools.hold = true;
  auto started = api->post("/api/v1/vms/" + vm + "/inspection", "");
  ASSERT_EQ(started.status, 202) << started.raw;
  const std::string job = started.body["job_id"];
  tools.wait_runs(1);
  EXPECT_EQ(status(), "inspecting");
  auto second = api->post("/api/v1/vms/" + vm + "/inspection", "");
  EXPECT_EQ(second.status, 409) << second.raw;
  EXPECT_NE(second.body.value("error", "").find("has an active job " + job), std::string::npos) << second.raw;
  EXPECT_EQ(api->post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", "incremental"}}.dump()).status, 409);
  EXPECT_EQ(api->post("/api/v1/vms/" + vm + "/boot-check", "").status, 409);
  tools.release();
  json j = test::wait_for_job(*api, job, test::job_ended);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["kind"], "inspection");
  EXPECT_EQ(status(), "replicated");

  // The replicas themselves, in unit order, read-only, with a time limit and cancel flag.
  ASSERT_EQ(tools.images.size(), 2u);
  EXPECT_EQ(tools.images[0].path, oma->repos().storage.find_volume(vm, "2000")->device_path);
  EXPECT_EQ(tools.images[1].path, oma->repos().storage.find_volume(vm, "2001")->device_path);
  EXPECT_EQ(tools.images[0].format, "raw");
  EXPECT_NE(tools.options.cancel, nullptr);

  auto r = api->get("/api/v1/vms/" + vm + "/inspection");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["vm_id"], vm);
  EXPECT_EQ(r.body["job_id"], job);
  EXPECT_EQ(r.body["started_by"], "api");
  EXPECT_EQ(r.body["os_found"], true);
  EXPECT_EQ(r.body["os_family"], "linux");
  EXPECT_EQ(r.body["distro"], "debian");
  EXPECT_EQ(r.body["version"], "12.12");
  EXPECT_EQ(r.body["product_name"], "Debian GNU/Linux 12 (bookworm)");
  EXPECT_EQ(r.body["osinfo"], "debian12");
  EXPECT_EQ(r.body["root_device"], "/dev/sdb1");
  EXPECT_EQ(r.body["boot_disk"], 1);
  EXPECT_EQ(r.body["boot_disk_key"], "2001");
  EXPECT_EQ(r.body["firmware"], "uefi");
  EXPECT_EQ(r.body["vsphere_firmware"], "efi");
  EXPECT_EQ(r.body["vsphere_secure_boot"], true);
  EXPECT_EQ(r.body["convertible"], true);
  EXPECT_EQ(r.body["reason"], "");
  EXPECT_EQ(r.body["seconds"], 19.75);
  EXPECT_GT(r.body["inspected_at"].get<int64_t>(), 0);
  const json expected_guest = {{"os", "debian 12.12"}, {"convertible", true}, {"reason", ""},
                               {"inspected_at", r.body["inspected_at"]}};
  EXPECT_EQ(api->get("/api/v1/vms/" + vm).body["guest"], expected_guest);
  EXPECT_EQ(api->get("/api/v1/vms").body["vms"][0]["guest"], expected_guest);
  // Replication goes on as before.
  EXPECT_EQ(pass("incremental")["status"], "completed");
}

// A disk without an OS is an answer: stored as not convertible with the reason, the job
// completed with a warning; the list shows it.
TEST_F(InspectionApi, AGuestThatCannotBeConvertedIsStoredWithItsReason) {
  start();
  ASSERT_EQ(pass("full")["status"], "completed");
  tools.no_os = true;
  json j = inspect();
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  bool warned = false;
  for (const auto& e : j["events"])
    warned |= e["level"] == "warn" && e["message"].get<std::string>().find("cannot be converted") != std::string::npos;
  EXPECT_TRUE(warned) << j["events"].dump(2);
  json r = api->get("/api/v1/vms/" + vm + "/inspection").body;
  EXPECT_EQ(r["os_found"], false);
  EXPECT_EQ(r["convertible"], false);
  EXPECT_NE(r["reason"].get<std::string>().find("no operating system"), std::string::npos) << r.dump(2);
  EXPECT_TRUE(r["boot_disk"].is_null());
  EXPECT_TRUE(r["boot_disk_key"].is_null());
  EXPECT_TRUE(r["firmware"].is_null());
  EXPECT_TRUE(r["vsphere_firmware"].is_null()) << "the fake VMA reports no firmware, as an older VMA";
  json guest = api->get("/api/v1/vms").body["vms"][0]["guest"];
  EXPECT_EQ(guest["os"], "");
  EXPECT_EQ(guest["convertible"], false);
  EXPECT_EQ(guest["reason"], r["reason"]);
}

// A tool that cannot run fails the job and keeps the last stored inspection.
TEST_F(InspectionApi, AnInspectionThatCannotRunFailsAndKeepsTheLastResult) {
  start();
  ASSERT_EQ(pass("full")["status"], "completed");
  const std::string first = inspect()["job_id"];
  tools.fail_with = "virt-inspector: not installed (apt-get install libguestfs-tools)";
  json j = inspect();
  ASSERT_EQ(j["status"], "failed") << j.dump(2);
  EXPECT_NE(j["error"].get<std::string>().find("could not run: virt-inspector: not installed"), std::string::npos)
      << j["error"];
  EXPECT_EQ(status(), "replicated");
  EXPECT_EQ(api->get("/api/v1/vms/" + vm + "/inspection").body["job_id"], first);
}

// A boot check's inspection is the VM's last inspection too.
TEST_F(InspectionApi, ABootChecksInspectionIsStored) {
  config.boot_check.inspect = [this](const auto& disks, const auto& o) {
    tools.no_os = true;
    return tools.inspect(disks, o);
  };
  start();
  ASSERT_EQ(pass("full")["status"], "completed");
  auto r = api->post("/api/v1/vms/" + vm + "/boot-check", "");
  ASSERT_EQ(r.status, 202) << r.raw;
  const std::string job = r.body["job_id"];
  EXPECT_EQ(test::wait_for_job(*api, job, test::job_ended)["status"], "failed");  // not convertible: not booted
  json in = api->get("/api/v1/vms/" + vm + "/inspection").body;
  EXPECT_EQ(in["job_id"], job);
  EXPECT_EQ(in["started_by"], "boot_check");
  EXPECT_EQ(in["convertible"], false);
}

// Off when unset: passes start no inspection.
TEST_F(InspectionApi, NoneRunsAfterPassesWhileTheSettingIsUnset) {
  start(true);
  auto bad = api->put("/api/v1/settings/inspection.after_pass", json{{"value", "yes"}}.dump());
  EXPECT_EQ(bad.status, 400) << bad.raw;
  ASSERT_EQ(pass("full")["status"], "completed");
  ASSERT_EQ(pass("incremental")["status"], "completed");
  EXPECT_TRUE(inspection_jobs().empty());
  EXPECT_EQ(tools.runs, 0);
}

// With guest conversion and the setting on, a full pass is followed by an inspection; an
// incremental pass only when the VM has none stored; none once the setting is off. The
// setting changes only where no pass's end can still read it otherwise: the hook runs on
// the pass's thread just after the job reads completed, so a setting turned on right
// after an uninspected pass may (rightly) inspect after that pass too.
TEST_F(InspectionApi, RunsAfterPassesWhenGuestsAreConverted) {
  start(true);
  ASSERT_EQ(api->put("/api/v1/settings/inspection.after_pass", json{{"value", "true"}}.dump()).status, 200);
  ASSERT_EQ(pass("full")["status"], "completed");
  // Started on the pass's thread right after the pass ended: look for it a little while.
  std::vector<std::string> jobs;
  for (int i = 0; i < 500 && jobs.empty(); ++i) {
    jobs = inspection_jobs();
    if (jobs.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(test::wait_for_job(*api, jobs[0], test::job_ended)["status"], "completed");
  EXPECT_EQ(api->get("/api/v1/vms/" + vm + "/inspection").body["started_by"], "after_pass");
  // Inspected already: incremental passes start none (a second pass would be refused
  // while a wrongly started inspection held the VM).
  ASSERT_EQ(pass("incremental")["status"], "completed");
  ASSERT_EQ(pass("incremental")["status"], "completed");
  EXPECT_EQ(inspection_jobs().size(), 1u);
  EXPECT_EQ(tools.runs, 1);
  ASSERT_EQ(api->put("/api/v1/settings/inspection.after_pass", json{{"value", "false"}}.dump()).status, 200);
  ASSERT_EQ(pass("full")["status"], "completed");
  ASSERT_EQ(pass("incremental")["status"], "completed");
  EXPECT_EQ(inspection_jobs().size(), 1u);
}

// Stopping the OMA mid-inspection cancels it and fails its job; the VM is replicated again.
TEST_F(InspectionApi, OmaStopMidInspectionCancelsItAndFailsItsJob) {
  start();
  ASSERT_EQ(pass("full")["status"], "completed");
  tools.hold = true;
  auto started = api->post("/api/v1/vms/" + vm + "/inspection", "");
  ASSERT_EQ(started.status, 202) << started.raw;
  const std::string job = started.body["job_id"];
  tools.wait_runs(1);
  oma->stop();
  EXPECT_TRUE(tools.saw_cancel);
  JobRecord j = oma->repos().jobs.get_job(job);
  EXPECT_EQ(j.status, JobStatus::Failed);
  EXPECT_NE(j.error.value_or("").find("the OMA is stopping"), std::string::npos) << j.error.value_or("");
  EXPECT_EQ(oma->repos().vms.get_vm(vm).status, VmStatus::Replicated);
  EXPECT_FALSE(oma->repos().inspections.find(vm));
}

// An OMA killed during an inspection: the next start fails its job saying so and the VM
// is replicated again.
TEST_F(InspectionApi, AnOmaRestartedDuringAnInspectionFailsItAndTheVmIsReplicatedAgain) {
  start();
  ASSERT_EQ(pass("full")["status"], "completed");
  api.reset();
  oma->stop();
  JobRecord job;
  job.job_id = "6c1d8d2f-3a4b-4c5d-8e9f-0a1b2c3d4e5f";
  job.vm_id = vm;
  job.kind = JobKind::Inspection;
  job.status = JobStatus::Running;
  job.phase = "inspecting the guest (read-only)";
  job.created_at = now_ms();
  oma->repos().jobs.create_job(job, {});
  oma->repos().vms.set_vm_status(vm, VmStatus::Inspecting);
  oma.reset();
  oma = std::make_unique<Oma>(config);
  oma->start();
  JobRecord after = oma->repos().jobs.get_job(job.job_id);
  for (int i = 0; i < 500 && !is_terminal(after.status); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = oma->repos().jobs.get_job(job.job_id);
  }
  EXPECT_EQ(after.status, JobStatus::Failed);
  EXPECT_NE(after.error.value_or("").find("the OMA restarted during this inspection"), std::string::npos)
      << after.error.value_or("");
  EXPECT_EQ(oma->repos().vms.get_vm(vm).status, VmStatus::Replicated);
  EXPECT_EQ(tools.runs, 0);
}

// `migratekit inspect VM`: refused with the API's message, then run, waited for and
// printed; exit 1 for a guest that cannot be converted.
TEST_F(InspectionApi, CliInspectsWaitsAndPrintsTheResult) {
  start();
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--api", "http://127.0.0.1:" + std::to_string(oma->api_port()), "--token-file",
                             dir.file("data/admin.token"), "--interval-ms", "50"});
    return mk::test::run_migratekit(args);
  };
  auto early = cli({"inspect", vm});
  EXPECT_EQ(early.exit_code, 2) << early.out;  // the API's 409, one line
  EXPECT_NE(early.err.find("run a full replication first"), std::string::npos) << early.err;
  ASSERT_EQ(pass("full")["status"], "completed");
  auto run = cli({"inspect", vm});
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("convertible: yes"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("guest:       debian 12.12 (linux)"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("root:        /dev/sdb1 on disk 1 (key 2001)"), std::string::npos) << run.out;
  tools.no_os = true;
  auto refused = cli({"inspect", vm, "--json"});
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  const size_t brace = refused.out.find('{');
  ASSERT_NE(brace, std::string::npos) << refused.out;
  json j = json::parse(refused.out.substr(brace));
  EXPECT_EQ(j["convertible"], false);
  EXPECT_NE(j["reason"].get<std::string>().find("no operating system"), std::string::npos);
  auto no_wait = cli({"inspect", vm, "--no-wait"});
  EXPECT_EQ(no_wait.exit_code, 0) << no_wait.out;
  test::wait_for_job(*api, no_wait.out.substr(0, 36), test::job_ended);
}

}  // namespace
}  // namespace mk::oma
