// The live event stream's hub on a real SQLite database: a change made right after a
// client subscribes (after its `hello`, before the hub's thread would have scanned) is
// emitted, so a client that fetched the state on `hello` never keeps a stale one. A
// change its job's runner tells (JobObserver) is emitted at once, and the scan never
// shows a followed copy's older bytes from the database after it.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "oma/gui/event_hub.h"
#include "repository_scenarios.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

using nlohmann::json;

struct Hub {
  mk::test::TempDir dir{"mk-event-hub"};
  db::SqliteDatabase database{dir.file("oma.db")};
  Repositories repos{database};
  // Never started: the test scans by hand, so nothing depends on the thread's timing.
  gui::EventHub hub{repos.jobs,
                    [](const JobRecord& j, const std::vector<JobDiskRecord>&) {
                      return json{{"job_id", j.job_id}, {"status", enum_name(j.status)}, {"bytes_done", j.bytes_done}};
                    },
                    {.poll_interval = std::chrono::hours(1)}};
  Hub() {
    db::migrate(database);
    repos.vms.add_vm(vm_record(kVm1), disk_records(1));
  }
};

std::vector<std::string> frames(gui::EventHub::Subscription& s) {
  auto f = s.next(std::chrono::milliseconds(0));
  return f ? *f : std::vector<std::string>{};
}

TEST(EventHub, AChangeRightAfterTheFirstSubscriberArrivesIsEmitted) {
  Hub h;
  h.repos.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));
  auto sub = h.hub.subscribe();
  auto hello = frames(*sub);
  ASSERT_EQ(hello.size(), 1u);
  EXPECT_EQ(hello[0].rfind("event: hello\n", 0), 0u) << hello[0];

  // The client fetched the job ("preparing") on hello; then the job fails.
  h.repos.jobs.finish_job("job-1", JobStatus::Failed, "CloudStack refused the volume");
  h.hub.scan();
  auto after = frames(*sub);
  ASSERT_EQ(after.empty(), false) << "the failure was never emitted";
  EXPECT_NE(after[0].find("\"status\":\"failed\""), std::string::npos) << after[0];
  h.hub.unsubscribe(sub);
}

TEST(EventHub, ASubscriberAfterEveryoneLeftGetsTheChangesAfterItsHello) {
  Hub h;
  auto first = h.hub.subscribe();
  h.hub.unsubscribe(first);
  h.repos.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));  // while nobody listens

  auto sub = h.hub.subscribe();
  ASSERT_EQ(frames(*sub).size(), 1u);  // hello only: the job as it is now is the REST fetch's business
  h.hub.scan();
  EXPECT_TRUE(frames(*sub).empty()) << "a job unchanged since hello was emitted again";
  h.repos.jobs.finish_job("job-1", JobStatus::Failed, "test failure");
  h.hub.scan();
  auto after = frames(*sub);
  ASSERT_EQ(after.empty(), false);
  EXPECT_NE(after[0].find("\"status\":\"failed\""), std::string::npos) << after[0];
  h.hub.unsubscribe(sub);
}

TEST(EventHub, AChangeToldByTheJobsRunnerIsEmittedAtOnceWithItsNewEvents) {
  Hub h;
  h.repos.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));
  auto sub = h.hub.subscribe();
  ASSERT_EQ(frames(*sub).size(), 1u);  // hello
  EXPECT_TRUE(h.hub.wants_changes());
  h.repos.jobs.set_job_status("job-1", JobStatus::Copying, "copying");
  h.repos.jobs.add_event("job-1", EventLevel::Info, "the VMA copies");
  JobRecord live = h.repos.jobs.get_job("job-1");
  live.bytes_done = 4096;  // newer than the database's
  h.hub.job_changed(live, h.repos.jobs.job_disks("job-1"), true);  // no scan
  auto f = frames(*sub);
  ASSERT_EQ(f.size(), 2u);
  EXPECT_EQ(f[0].rfind("event: job\n", 0), 0u) << f[0];
  EXPECT_NE(f[0].find("\"bytes_done\":4096"), std::string::npos) << f[0];
  EXPECT_NE(f[0].find("\"status\":\"copying\""), std::string::npos) << f[0];
  EXPECT_EQ(f[1].rfind("event: log\n", 0), 0u) << f[1];
  h.hub.job_changed(live, h.repos.jobs.job_disks("job-1"), true);
  EXPECT_TRUE(frames(*sub).empty()) << "nothing changed: nothing emitted";
  h.hub.unsubscribe(sub);
  EXPECT_FALSE(h.hub.wants_changes());
}

TEST(EventHub, AScanDoesNotShowAFollowedCopysOlderBytesUntilItsRunnerLetsGo) {
  Hub h;
  h.repos.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));
  auto sub = h.hub.subscribe();
  frames(*sub);
  JobRecord live = h.repos.jobs.get_job("job-1");
  live.bytes_done = 8192;
  h.hub.job_changed(live, h.repos.jobs.job_disks("job-1"), true);
  ASSERT_EQ(frames(*sub).size(), 1u);
  h.repos.jobs.set_job_status("job-1", JobStatus::Copying, "copying");  // the row changes, its bytes are older
  h.hub.scan();
  EXPECT_TRUE(frames(*sub).empty()) << "the scan showed bytes older than those already sent";
  h.hub.job_changed(h.repos.jobs.get_job("job-1"), h.repos.jobs.job_disks("job-1"), false);  // the copy ended
  ASSERT_EQ(frames(*sub).size(), 1u);
  h.repos.jobs.finish_job("job-1", JobStatus::Failed, "test failure");
  h.hub.scan();  // the database shows it again
  auto after = frames(*sub);
  ASSERT_EQ(after.size(), 1u);
  EXPECT_NE(after[0].find("\"status\":\"failed\""), std::string::npos) << after[0];
  h.hub.unsubscribe(sub);
}

}  // namespace
}  // namespace mk::oma::test
