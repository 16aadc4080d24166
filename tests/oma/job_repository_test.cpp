// JobRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h): one
// active job per VM, change IDs committed all-or-nothing, progress, the job's log.
#include <gtest/gtest.h>

#include "oma/errors.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void OneActiveJobPerVmButConcurrentJobsForDifferentVms(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.vms.add_vm(vm_record(kVm2), disk_records(1));
  r.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));
  EXPECT_THROW(r.jobs.create_job(job_record("job-2", kVm1), job_disk_records("job-2", 1)), Conflict);
  EXPECT_FALSE(r.jobs.find_job("job-2"));
  r.jobs.create_job(job_record("job-3", kVm2), job_disk_records("job-3", 1));
  EXPECT_EQ(r.jobs.active_jobs().size(), 2u);
  EXPECT_EQ(r.vms.get_vm(kVm1).current_job_id.value_or(""), "job-1");
  EXPECT_EQ(r.vms.get_vm(kVm1).status, VmStatus::Replicating);

  r.jobs.finish_job("job-1", JobStatus::Failed, "test failure");
  EXPECT_FALSE(r.vms.get_vm(kVm1).current_job_id);
  EXPECT_EQ(r.vms.get_vm(kVm1).status, VmStatus::ReplicationFailed);
  JobRecord ended = r.jobs.get_job("job-1");
  EXPECT_EQ(ended.error.value_or(""), "test failure");
  EXPECT_EQ(ended.status, JobStatus::Failed);
  EXPECT_EQ(ended.phase, "failed");
  EXPECT_TRUE(ended.finished_at);
  EXPECT_THROW(r.jobs.finish_job("job-3", JobStatus::Copying, std::nullopt), Error);  // not an end
  r.jobs.create_job(job_record("job-4", kVm1), job_disk_records("job-4", 1));  // the VM is free again
  EXPECT_EQ(r.jobs.active_jobs().size(), 2u);
  EXPECT_EQ(r.jobs.list_jobs(kVm1).size(), 2u);
  EXPECT_EQ(r.jobs.list_jobs("", JobStatus::Failed).size(), 1u);
  EXPECT_EQ(r.jobs.list_jobs(kVm2, JobStatus::Failed).size(), 0u);
}

void PhaseTimesAreKeptPerDiskInPassOrderAndSummedForMetrics(db::Database&, Repositories& r) {
  using protocol::PassPhase;
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  r.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 2));
  EXPECT_TRUE(r.jobs.job_disks("job-1")[0].phases.empty());
  std::vector<protocol::PhaseTime> first = {{PassPhase::Snapshot, 1.5}, {PassPhase::ChangeQuery, 0.25}};
  r.jobs.set_disk_phases("job-1", "2000", first);
  // Later phases replace the earlier record, whatever order they are written in.
  std::vector<protocol::PhaseTime> all = {{PassPhase::Snapshot, 1.5},   {PassPhase::ChangeQuery, 0.25},
                                          {PassPhase::ReaderStart, 0.125}, {PassPhase::Planning, 0.0},
                                          {PassPhase::Copying, 12.75},  {PassPhase::Flushing, 0.5},
                                          {PassPhase::SnapshotRemoval, 0.75}, {PassPhase::Reporting, 1.0}};
  r.jobs.set_disk_phases("job-1", "2000", all);
  r.jobs.set_disk_phases("job-1", "2001", {{PassPhase::Snapshot, 1.5}, {PassPhase::Copying, 2.25}});
  auto disks = r.jobs.job_disks("job-1");
  ASSERT_EQ(disks.size(), 2u);
  EXPECT_EQ(disks[0].phases, all);
  EXPECT_EQ(disks[1].phases, (std::vector<protocol::PhaseTime>{{PassPhase::Snapshot, 1.5}, {PassPhase::Copying, 2.25}}));
  auto totals = r.jobs.phase_totals();
  ASSERT_EQ(totals.size(), all.size());
  EXPECT_EQ(totals[0].phase, PassPhase::Snapshot);
  EXPECT_DOUBLE_EQ(totals[0].seconds, 3.0);
  EXPECT_EQ(totals[0].count, 2);
  EXPECT_EQ(totals[4].phase, PassPhase::Copying);
  EXPECT_DOUBLE_EQ(totals[4].seconds, 15.0);
  EXPECT_EQ(totals[7].phase, PassPhase::Reporting);
  EXPECT_EQ(totals[7].count, 1);
}

// The downtime prediction leaves out the incremental passes' snapshots (pass_stats.h):
// per incremental job, the slowest disk's snapshot creation + removal; full passes and
// jobs without such phases are absent.
void IncrementalSnapshotSecondsArePerJobTheSlowestDisks(db::Database&, Repositories& r) {
  using protocol::PassPhase;
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  r.jobs.create_job(job_record("full-1", kVm1), job_disk_records("full-1", 2));
  r.jobs.set_disk_phases("full-1", "2000", {{PassPhase::Snapshot, 9.0}, {PassPhase::SnapshotRemoval, 9.0}});
  r.jobs.finish_job("full-1", JobStatus::Completed, std::nullopt);
  JobRecord incr = job_record("incr-1", kVm1);
  incr.kind = JobKind::Incremental;
  r.jobs.create_job(incr, job_disk_records("incr-1", 2));
  r.jobs.set_disk_phases("incr-1", "2000", {{PassPhase::Snapshot, 4.0}, {PassPhase::Copying, 0.5},
                                            {PassPhase::SnapshotRemoval, 2.0}});
  r.jobs.set_disk_phases("incr-1", "2001", {{PassPhase::Snapshot, 4.0}, {PassPhase::Copying, 7.0},
                                            {PassPhase::SnapshotRemoval, 2.5}});
  r.jobs.finish_job("incr-1", JobStatus::Completed, std::nullopt);
  incr.job_id = "incr-2";
  r.jobs.create_job(incr, job_disk_records("incr-2", 2));
  r.jobs.set_disk_phases("incr-2", "2000", {{PassPhase::Copying, 1.0}});
  auto seconds = r.jobs.incremental_snapshot_seconds();
  EXPECT_EQ(seconds, (std::map<std::string, double>{{"incr-1", 6.5}}));
}

void ChangeIdsCommitOnlyWhenEveryDiskCompleted(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  r.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 2));
  auto d = r.jobs.job_disks("job-1");
  d[0].status = protocol::DiskStatus::Completed;
  d[0].change_id_new = "52 3c ... /1";
  r.jobs.update_disk_progress(d[0]);
  EXPECT_THROW(r.jobs.commit_change_ids("job-1"), Error);  // disk 2001 is still pending
  EXPECT_FALSE(r.vms.list_disks(kVm1)[0].change_id);      // nothing committed, not even disk 2000

  d[1].status = protocol::DiskStatus::Completed;
  d[1].change_id_new = "52 3c ... /2";
  r.jobs.update_disk_progress(d[1]);
  r.jobs.commit_change_ids("job-1");
  r.jobs.commit_change_ids("job-1");  // idempotent (recovery may commit again)
  EXPECT_EQ(r.vms.list_disks(kVm1)[1].change_id.value_or(""), "52 3c ... /2");
  EXPECT_TRUE(r.jobs.job_disks("job-1")[0].committed);
  auto h = r.jobs.cbt_history(kVm1, "2000");
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].change_id, "52 3c ... /1");
  EXPECT_EQ(h[0].job_id, "job-1");
  auto commits = r.jobs.latest_change_id_commits();
  ASSERT_EQ(commits.size(), 2u);
  EXPECT_EQ(commits[0].committed_at, h[0].committed_at);
}

void ProgressRollsUpFromDisks(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  r.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 2));
  auto d = r.jobs.job_disks("job-1");
  d[0].bytes_done = 100;
  d[0].bytes_total = 1000;
  d[0].eta_seconds = 5;
  d[0].status = protocol::DiskStatus::Copying;
  d[0].phase = protocol::DiskPhase::Copying;
  d[1].bytes_done = 50;
  d[1].bytes_total = 500;
  d[1].eta_seconds = 9;
  r.jobs.update_disk_progress(d[0]);
  r.jobs.update_disk_progress(d[1]);
  r.jobs.roll_up_progress("job-1");
  JobRecord j = r.jobs.get_job("job-1");
  EXPECT_EQ(j.bytes_done, 150);
  EXPECT_EQ(j.bytes_total, 1500);
  EXPECT_DOUBLE_EQ(j.eta_seconds, 9);
  EXPECT_EQ(r.jobs.job_disks("job-1")[0].status, protocol::DiskStatus::Copying);
  EXPECT_EQ(r.jobs.job_totals().first, 150);
  auto by_status = r.jobs.jobs_by_status();
  ASSERT_EQ(by_status.size(), 1u);
  EXPECT_EQ(by_status[0], std::make_pair(JobStatus::Preparing, int64_t{1}));
}

void StepsAndEventsAreNumberedPerJob(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));
  int64_t s1 = r.jobs.begin_step("job-1", "preparing");
  r.jobs.end_step("job-1", s1, StepStatus::Completed);
  int64_t s2 = r.jobs.begin_step("job-1", "exporting");
  EXPECT_EQ(s2, s1 + 1);
  r.jobs.end_step("job-1", r.jobs.begin_step("job-1", "mark"), StepStatus::Skipped, "not needed");
  r.jobs.add_event("job-1", EventLevel::Info, "first");
  r.jobs.add_event("job-1", EventLevel::Warn, "second");
  auto ev = r.jobs.list_events("job-1");
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1].message, "second");
  EXPECT_EQ(ev[1].level, EventLevel::Warn);
  EXPECT_EQ(ev[1].seq, 2);
  auto steps = r.jobs.list_steps("job-1");
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0].status, StepStatus::Completed);
  EXPECT_FALSE(steps[0].message);
  EXPECT_TRUE(steps[0].finished_at);
  EXPECT_EQ(steps[1].status, StepStatus::Running);
  EXPECT_FALSE(steps[1].finished_at);
  EXPECT_EQ(steps[2].status, StepStatus::Skipped);
  EXPECT_EQ(steps[2].message.value_or(""), "not needed");
}

// Job kinds longer than the first schema allowed ("test_failover_cleanup": MariaDB
// enforces column widths); only passes count as ended passes.
void CutoverJobKindsAndEndedPasses(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  JobRecord j = job_record("job-1", kVm1);
  j.kind = JobKind::TestFailoverCleanup;
  j.status = JobStatus::Running;
  r.jobs.create_job(j, {});
  EXPECT_EQ(r.jobs.get_job("job-1").kind, JobKind::TestFailoverCleanup);
  r.jobs.finish_job("job-1", JobStatus::Completed, std::nullopt);
  EXPECT_TRUE(r.jobs.ended_passes().empty());
  r.jobs.create_job(job_record("job-2", kVm1), {});
  r.jobs.request_cancel("job-2");
  EXPECT_TRUE(r.jobs.get_job("job-2").cancel_requested);
  r.jobs.finish_job("job-2", JobStatus::Cancelled, "cancelled by request");
  EXPECT_EQ(r.vms.get_vm(kVm1).status, VmStatus::ReplicationCancelled);
  auto passes = r.jobs.ended_passes();
  ASSERT_EQ(passes.size(), 1u);
  EXPECT_EQ(passes[0].job_id, "job-2");
}

void AnUnknownJobStatusIsAnErrorNamingTableRowAndValue(db::Database& database, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.jobs.create_job(job_record("job-1", kVm1), job_disk_records("job-1", 1));
  database.exec("UPDATE replication_jobs SET status = 'paused' WHERE job_id = 'job-1'");
  try {
    r.jobs.get_job("job-1");
    FAIL() << "an unknown job status was read";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("replication_jobs row (job_id=job-1): column status: 'paused' is not a job status"),
              std::string::npos)
        << m;
  }
  EXPECT_THROW(r.jobs.jobs_by_status(), Error);
  database.exec("UPDATE job_disks SET status = 'verifying' WHERE job_id = 'job-1'");
  try {
    r.jobs.job_disks("job-1");
    FAIL() << "an unknown disk status was read";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("job_disks row (job_id=job-1, disk_key=2000)"), std::string::npos) << e.what();
  }
}

// Issue 16: the claim and the VM's status change together. A cutover's end sets the
// VM's status in the transaction that frees it, and a cut-over VM (or one in a test
// failover) takes no new job but the test failover's cleanup.
void EndingAJobSetsTheVmStatusWithTheReleaseAndASettledVmTakesNoJob(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  JobRecord cutover = job_record("job-1", kVm1);
  cutover.kind = JobKind::Cutover;
  r.jobs.create_job(cutover, {});
  r.jobs.finish_job("job-1", JobStatus::Completed, std::nullopt, VmStatus::CutOver);
  EXPECT_EQ(r.vms.get_vm(kVm1).status, VmStatus::CutOver);
  EXPECT_FALSE(r.vms.get_vm(kVm1).current_job_id);
  for (JobKind kind : {JobKind::Full, JobKind::Incremental, JobKind::Cutover, JobKind::TestFailover}) {
    JobRecord j = job_record("job-2", kVm1);
    j.kind = kind;
    try {
      r.jobs.create_job(j, job_disk_records("job-2", 1));
      ADD_FAILURE() << enum_name(kind) << " job created on a cut-over VM";
    } catch (const Conflict& e) {
      EXPECT_NE(std::string(e.what()).find("has been cut over"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(r.jobs.find_job("job-2"));
  }
  EXPECT_EQ(r.vms.get_vm(kVm1).status, VmStatus::CutOver);

  r.vms.add_vm(vm_record(kVm2), disk_records(1));
  r.vms.set_vm_status(kVm2, VmStatus::TestFailover);
  EXPECT_THROW(r.jobs.create_job(job_record("job-3", kVm2), {}), Conflict);
  JobRecord cleanup = job_record("job-4", kVm2);
  cleanup.kind = JobKind::TestFailoverCleanup;
  r.jobs.create_job(cleanup, {});
  EXPECT_EQ(r.vms.get_vm(kVm2).current_job_id.value_or(""), "job-4");
  r.jobs.finish_job("job-4", JobStatus::Failed, "cleanup failed", VmStatus::TestFailoverCleanupInterrupted);
  EXPECT_EQ(r.vms.get_vm(kVm2).status, VmStatus::TestFailoverCleanupInterrupted);
  r.jobs.create_job(job_record("job-5", kVm2), {});  // no longer in a test failover
}

}  // namespace

Scenarios job_repository_scenarios() {
  return {{"OneActiveJobPerVmButConcurrentJobsForDifferentVms", OneActiveJobPerVmButConcurrentJobsForDifferentVms},
          {"ChangeIdsCommitOnlyWhenEveryDiskCompleted", ChangeIdsCommitOnlyWhenEveryDiskCompleted},
          {"PhaseTimesAreKeptPerDiskInPassOrderAndSummedForMetrics",
           PhaseTimesAreKeptPerDiskInPassOrderAndSummedForMetrics},
          {"IncrementalSnapshotSecondsArePerJobTheSlowestDisks", IncrementalSnapshotSecondsArePerJobTheSlowestDisks},
          {"ProgressRollsUpFromDisks", ProgressRollsUpFromDisks},
          {"StepsAndEventsAreNumberedPerJob", StepsAndEventsAreNumberedPerJob},
          {"CutoverJobKindsAndEndedPasses", CutoverJobKindsAndEndedPasses},
          {"AnUnknownJobStatusIsAnErrorNamingTableRowAndValue", AnUnknownJobStatusIsAnErrorNamingTableRowAndValue},
          {"EndingAJobSetsTheVmStatusWithTheReleaseAndASettledVmTakesNoJob",
           EndingAJobSetsTheVmStatusWithTheReleaseAndASettledVmTakesNoJob}};
}

}  // namespace mk::oma::test
