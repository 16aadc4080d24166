// ScheduleRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h):
// one schedule per known VM, replaced in place, with the record of its last run.
#include <gtest/gtest.h>

#include "oma/errors.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void OneSchedulePerVmKeepsItsLastRun(db::Database&, Repositories& r) {
  ScheduleRecord s;
  s.vm_id = kVm1;
  s.interval_minutes = 60;
  s.enabled = true;
  s.next_run_at = 5000;
  EXPECT_THROW(r.schedules.put_schedule(s), NotFound);  // the VM must be known
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.schedules.put_schedule(s);
  r.schedules.record_schedule_run(kVm1, 5000, 8600, std::string("job-1"), "started incremental pass job-1");
  r.schedules.record_schedule_run(kVm1, 8600, 12200, std::nullopt, "skipped: job job-1 was still active");
  s.interval_minutes = 30;
  s.enabled = false;
  r.schedules.put_schedule(s);  // replaces the interval, keeps the last run
  auto got = r.schedules.find_schedule(kVm1);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->interval_minutes, 30);
  EXPECT_FALSE(got->enabled);
  EXPECT_EQ(got->last_run_at.value_or(0), 8600);
  EXPECT_EQ(got->last_job_id.value_or(""), "job-1");  // a skipped run keeps the job it names
  EXPECT_EQ(got->last_result.value_or(""), "skipped: job job-1 was still active");
  EXPECT_EQ(r.schedules.list_schedules().size(), 1u);
  r.schedules.delete_schedule(kVm1);
  EXPECT_FALSE(r.schedules.find_schedule(kVm1));
  EXPECT_THROW(r.schedules.delete_schedule(kVm1), NotFound);
}

}  // namespace

Scenarios schedule_repository_scenarios() {
  return {{"OneSchedulePerVmKeepsItsLastRun", OneSchedulePerVmKeepsItsLastRun}};
}

}  // namespace mk::oma::test
