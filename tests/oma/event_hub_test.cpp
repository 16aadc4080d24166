// The live event stream's hub on a real SQLite database: a change made right after a
// client subscribes (after its `hello`, before the hub's thread would have scanned) is
// emitted, so a client that fetched the state on `hello` never keeps a stale one.
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
                      return json{{"job_id", j.job_id}, {"status", enum_name(j.status)}};
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

}  // namespace
}  // namespace mk::oma::test
