// Job recovery with the real `oma` binary: killed with SIGKILL while two jobs copy,
// then started again on the same data directory. The job whose copy went on at the VMA
// resumes polling and completes; the job the VMA lost fails with that reason; none
// stays active.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "fake_vma.h"
#include "oma_process.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/net.h"

namespace mk::oma {
namespace {

using nlohmann::json;

protocol::DiskProgress disk_done(const std::string& key, const std::string& change_id) {
  protocol::DiskProgress p;
  p.disk_key = protocol::DiskKey::parse(key);
  p.status = protocol::DiskStatus::Completed;
  p.phase = protocol::DiskPhase::Done;
  p.bytes_done = p.bytes_total = 1048576;
  p.change_id = change_id;
  return p;
}

TEST(Recovery, KilledOmaResumesOrFailsEveryJob) {
  mk::test::TempDir dir("mk-oma-recovery");
  std::string data = dir.file("data");
  test::FakeVma vma(mk::test::make_psk_file(dir.file("vma.psk"), "oma"));
  std::string vm_a = test::test_vm_uuid(1), vm_b = test::test_vm_uuid(2);
  std::string job_a, job_b;
  pid_t nbdkit_pid = 0;
  {
    test::OmaProcess oma(data, vma.url(), dir.file("oma1.log"));
    test::ApiClient api(oma.port, test::read_admin_token(data));
    ASSERT_EQ(api.post("/api/v1/vms", test::vm_body(vm_a, 2, 1048576).dump()).status, 201);
    ASSERT_EQ(api.post("/api/v1/vms", test::vm_body(vm_b, 1, 1048576).dump()).status, 201);
    job_a = api.post("/api/v1/jobs", json{{"vm_id", vm_a}, {"kind", "full"}}.dump()).body["job_id"];
    job_b = api.post("/api/v1/jobs", json{{"vm_id", vm_b}, {"kind", "full"}}.dump()).body["job_id"];
    for (const auto& j : {job_a, job_b}) {
      json seen = test::wait_for_job(api, j, [](const json& x) { return x["status"] == "copying"; });
      ASSERT_EQ(seen["status"], "copying") << seen.dump(2);
    }
    nbdkit_pid = api.get("/health").body["export_server_pid"];
    oma.process.signal(SIGKILL);
    oma.process.wait();
  }
  // While the OMA is down, the VMA finishes job A and loses job B.
  vma.set_disk(job_a, disk_done("2000", "cbt-a0"));
  vma.set_disk(job_a, disk_done("2001", "cbt-a1"));
  vma.forget(job_b);
  // nbdkit dies with its parent (PR_SET_PDEATHSIG); wait for that before restarting.
  for (int i = 0; i < 500 && ::kill(nbdkit_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));

  test::OmaProcess oma(data, vma.url(), dir.file("oma2.log"));
  test::ApiClient api(oma.port, test::read_admin_token(data));
  json a = test::wait_for_job(api, job_a, test::job_ended);
  json b = test::wait_for_job(api, job_b, test::job_ended);
  EXPECT_EQ(a["status"], "completed") << a.dump(2) << mk::test::log_tail(dir.file("oma2.log"));
  EXPECT_EQ(b["status"], "failed") << b.dump(2);
  EXPECT_NE(b["error"].get<std::string>().find("no longer knows"), std::string::npos) << b["error"];
  bool resumed_event = false;
  for (const auto& e : a["events"]) resumed_event |= e["message"].get<std::string>().find("OMA restarted") == 0;
  EXPECT_TRUE(resumed_event) << a["events"].dump(2);
  EXPECT_EQ(api.get("/api/v1/jobs?status=copying").body["jobs"].size(), 0u);
  auto vm = api.get("/api/v1/vms/" + vm_a).body;
  EXPECT_TRUE(vm["current_job_id"].is_null());
  EXPECT_EQ(vm["disks"][1]["change_id"], "cbt-a1");
  // The restarted OMA serves the same exports (the files survived).
  EXPECT_EQ(api.get("/api/v1/exports").body["exports"].size(), 3u);
  EXPECT_TRUE(vma.violations().empty());
  oma.process.stop();
}

}  // namespace
}  // namespace mk::oma
