// JobRunner's memory: ended jobs leave memory after keep_ended_jobs_in_memory_seconds
// and are answered from their records from then on (get, stop, a repeated submit).
// And its long poll (wait_for_change): at once when the caller's revision is not the
// job's, on the job's next change otherwise, at the bound when nothing changes.
// The jobs here fail at once (their vCenter refuses connections): what is tested is
// what the runner keeps, not a pass.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
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

// No test here measures a time: a wait that should have ended at once but did not
// would hang the test until CTest's timeout, which fails it.
constexpr std::chrono::hours kForever{1};

TEST_F(JobRunnerMemory, ALongPollAnswersAtOnceWhenTheCallersRevisionIsNotTheJobs) {
  auto r = runner(3600);
  std::string id = run_to_end(*r);
  auto first = r->wait_for_change(id, std::nullopt, kForever);  // no revision yet: at once
  ASSERT_TRUE(first);
  EXPECT_GT(first->revision, 0) << "every recorded change raised it (queued, running, failed)";
  EXPECT_EQ(first->state.status, VmaJobStatus::Failed);
  // An older revision (the job changed since), and a newer one (the caller's is from
  // a VMA that ran before this one restarted): both answered at once.
  EXPECT_EQ(r->wait_for_change(id, first->revision - 1, kForever)->revision, first->revision);
  EXPECT_EQ(r->wait_for_change(id, first->revision + 100, kForever)->revision, first->revision);
  // Nothing changes any more: the wait ends at its bound, with the same revision.
  EXPECT_EQ(r->wait_for_change(id, first->revision, std::chrono::milliseconds(20))->revision, first->revision);
  EXPECT_FALSE(r->wait_for_change(protocol::new_uuid(), std::nullopt, kForever)) << "an unknown job";
}

TEST_F(JobRunnerMemory, ALongPollOnAnUnchangedJobReturnsWithItsNextChangeOfStatus) {
  auto r = runner(3600);
  JobState job = failing_job();
  std::string id = job.job_id();
  // The VM's lock held here keeps the job queued: nothing changes until it is released.
  auto vm_lock = r->lock_vm(job.vm_id());
  ASSERT_TRUE(r->submit(job));
  auto queued = r->wait_for_change(id, std::nullopt, kForever);
  ASSERT_TRUE(queued);
  ASSERT_EQ(queued->state.status, VmaJobStatus::Queued);
  EXPECT_EQ(r->wait_for_change(id, queued->revision, std::chrono::milliseconds(20))->revision, queued->revision)
      << "the job is held: the wait ends at its bound";
  auto next = std::async(std::launch::async, [&] { return r->wait_for_change(id, queued->revision, kForever); });
  vm_lock.unlock();  // the job runs (and fails: no vCenter): its status changes
  auto changed = next.get();
  ASSERT_TRUE(changed);
  EXPECT_GT(changed->revision, queued->revision);
  EXPECT_NE(changed->state.status, VmaJobStatus::Queued);
}

TEST_F(JobRunnerMemory, ReleasedWaitersAnswerAtOnce) {
  auto r = runner(3600);
  JobState job = failing_job();
  auto vm_lock = r->lock_vm(job.vm_id());
  ASSERT_TRUE(r->submit(job));
  auto queued = r->wait_for_change(job.job_id(), std::nullopt, kForever);
  auto held = std::async(std::launch::async,
                         [&] { return r->wait_for_change(job.job_id(), queued->revision, kForever); });
  r->release_waiters();  // the API stops: its workers must not stay in a wait
  EXPECT_EQ(held.get()->revision, queued->revision);
  EXPECT_EQ(r->wait_for_change(job.job_id(), queued->revision, kForever)->revision, queued->revision);
  vm_lock.unlock();
}

}  // namespace
}  // namespace mk::vma
