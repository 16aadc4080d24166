// Races between a job that ends and a job that starts on the same VM (issue 16, fix 1):
// a cutover or test failover frees the VM and sets its status in one transaction, so
// a pass started the moment the cutover's end is recorded already finds it cut over.
// The JobManager's after_finish hook runs exactly in the former window; no VMA, volume
// or export is touched (custom jobs without a final pass).
#include <gtest/gtest.h>

#include <future>

#include "oma/db/migrations.h"
#include "oma/db/repositories.h"
#include "oma/db/sqlite_database.h"
#include "oma/errors.h"
#include "oma/exports/export_manager.h"
#include "oma/exports/nbdkit_server.h"
#include "oma/jobs/job_manager.h"
#include "oma/volumes/volume_manager.h"
#include "repository_scenarios.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

struct Manager {
  mk::test::TempDir dir{"mk-oma-races"};
  std::unique_ptr<db::Database> database = db::open_database("sqlite:" + dir.file("oma.db"));
  Repositories repos{(db::migrate(*database), *database)};
  LocalVolumeBackend volume_backend{dir.file("volumes")};
  VolumeManager volumes{repos.storage, volume_backend};
  NbdkitExportServer export_server{{dir.file("exports"), "127.0.0.1", 0,
                                    {mk::test::make_psk_file(dir.file("psk"), "oma"), ""}}};
  ExportManager exports{repos.storage, export_server};
  HttpVmaClient vma{"http://127.0.0.1:9", std::chrono::seconds(1)};  // never called here
  std::unique_ptr<JobManager> jobs;

  explicit Manager(std::function<void(const std::string&)> after_finish) {
    JobOptions o;
    o.after_finish = std::move(after_finish);
    jobs = std::make_unique<JobManager>(repos.vms, repos.jobs, volumes, exports, vma, o);
  }
};

// What a start attempt inside the window ended with: "" (a job started) or the error.
std::string try_start(JobManager& jobs, const std::string& vm, JobKind kind) {
  try {
    jobs.start(vm, kind);
    return "";
  } catch (const std::exception& e) {
    return e.what();
  }
}

TEST(JobRaces, APassStartedWhenACutoverEndsFindsTheVmCutOver) {
  std::promise<std::string> in_window;
  Manager* self = nullptr;
  Manager m([&](const std::string&) { in_window.set_value(try_start(*self->jobs, kVm1, JobKind::Full)); });
  self = &m;
  m.repos.vms.add_vm(vm_record(kVm1), disk_records(1));
  std::string cutover =
      m.jobs->start_custom(kVm1, JobKind::Cutover, false, [](const JobRecord&) { return VmStatus::CutOver; });
  std::string refused = in_window.get_future().get();
  EXPECT_NE(refused.find("has been cut over"), std::string::npos) << "a pass started on a cut-over VM: " << refused;
  m.jobs->shutdown();
  EXPECT_EQ(m.repos.vms.get_vm(kVm1).status, VmStatus::CutOver);
  EXPECT_EQ(m.repos.jobs.list_jobs(kVm1).size(), 1u);
  EXPECT_EQ(m.repos.jobs.get_job(cutover).status, JobStatus::Completed);
}

TEST(JobRaces, AFailedCustomJobSetsItsVmStatusWithTheRelease) {
  Manager m([](const std::string&) {});
  m.repos.vms.add_vm(vm_record(kVm1), disk_records(1));
  // A test failover whose body fails and says the VM is in a test failover (its
  // rollback could not finish): the status is there as soon as the VM is free.
  std::string job = m.jobs->start_custom(kVm1, JobKind::TestFailover, false, [](const JobRecord&) -> VmStatus {
    throw JobFailed("rollback incomplete", VmStatus::TestFailover);
  });
  for (int i = 0; i < 3000 && !is_terminal(m.repos.jobs.get_job(job).status); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(m.repos.jobs.get_job(job).status, JobStatus::Failed);
  EXPECT_EQ(m.repos.vms.get_vm(kVm1).status, VmStatus::TestFailover);
  EXPECT_NE(try_start(*m.jobs, kVm1, JobKind::Full).find("test failover"), std::string::npos);
}

}  // namespace
}  // namespace mk::oma::test
