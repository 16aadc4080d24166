// JobRunner's memory: ended jobs leave memory after keep_ended_jobs_in_memory_seconds
// and are answered from their records from then on (get, stop, a repeated submit).
// The jobs here fail at once (their vCenter refuses connections): what is tested is
// what the runner keeps, not a pass.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "common/files.h"
#include "protocol/names.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "vma/runner/job_runner.h"

namespace mk::vma {
namespace {

using protocol::VmaJobStatus;

JobState failing_job() {
  protocol::ReplicateRequest r;
  r.job_id = protocol::new_uuid();
  r.vm_id = protocol::new_uuid();
  r.nbd.host = "127.0.0.1";
  protocol::ReplicateDisk d;
  d.disk_key = protocol::DiskKey(2000);
  d.capacity_bytes = 1 << 20;
  d.export_name = "migration-vm-" + r.vm_id + "-disk0";
  r.disks.push_back(d);
  return JobState::from(std::move(r));
}

class JobRunnerMemory : public ::testing::Test {
 protected:
  JobRunnerMemory() {
    write_private_file(dir_.file("password"), "secret\n");
    VcenterConfig c;
    c.connect.url = "https://127.0.0.1:" + std::to_string(mk::test::free_tcp_port()) + "/sdk";  // nobody listens
    c.connect.user = "user";
    c.connect.password_file = dir_.file("password");
    c.connect.keepalive = std::chrono::seconds(0);
    vcenter_ = std::make_unique<VCenter>(c);
    store_ = std::make_unique<JobStore>(dir_.file("jobs"));
  }

  std::unique_ptr<JobRunner> runner(int64_t keep_in_memory_seconds) {
    RunnerOptions o;
    o.work_dir = dir_.path();
    o.keep_ended_jobs_in_memory_seconds = keep_in_memory_seconds;
    return std::make_unique<JobRunner>(o, *vcenter_, *store_);
  }

  // Submits a job and waits until it ended (failed: vCenter cannot be reached).
  static std::string run_to_end(JobRunner& r) {
    JobState job = failing_job();
    std::string id = job.job_id();
    EXPECT_TRUE(r.submit(job));
    for (int i = 0; i < 600; ++i) {
      auto s = r.get(id);
      if (s && s->ended_state()) return id;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ADD_FAILURE() << "job " << id << " did not end within 30 s";
    return id;
  }

  mk::test::TempDir dir_{"mk-job-runner"};
  std::unique_ptr<VCenter> vcenter_;
  std::unique_ptr<JobStore> store_;
};

TEST_F(JobRunnerMemory, EndedJobsLeaveMemoryAndAreStillAnsweredFromTheirRecords) {
  auto r = runner(0);
  std::string first = run_to_end(*r);
  std::string id;
  for (int i = 0; i < 20; ++i) id = run_to_end(*r);
  // Each submit forgets the jobs that ended before it: only the last one (ended since) is held.
  EXPECT_EQ(r->jobs_in_memory(), 1u);

  auto s = r->get(first);
  ASSERT_TRUE(s) << "an ended job must still be known from its record";
  EXPECT_EQ(s->status, VmaJobStatus::Failed);
  ASSERT_TRUE(s->ended_seconds_ago);
  EXPECT_GE(*s->ended_seconds_ago, 0);
  EXPECT_TRUE(r->stop(first)) << "stopping an ended job is answered as done";
  JobState again = failing_job();
  again.request.job_id = first;
  EXPECT_FALSE(r->submit(again)) << "a job that ended long ago is still known: the OMA's repeated call must not "
                                    "start it again";
  EXPECT_FALSE(r->get(protocol::new_uuid())) << "an unknown job stays unknown";
  EXPECT_FALSE(r->stop(protocol::new_uuid()));
}

TEST_F(JobRunnerMemory, RecentlyEndedJobsStayInMemory) {
  auto r = runner(3600);
  for (int i = 0; i < 5; ++i) run_to_end(*r);
  EXPECT_EQ(r->jobs_in_memory(), 5u);
}

}  // namespace
}  // namespace mk::vma
