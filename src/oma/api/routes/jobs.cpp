// Replication jobs: start, list, show, progress, cancel.
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kJobsTag{"Jobs", "Replication passes (full and incremental), cutovers and test failovers as jobs"};

const Schema kStartJobSchema{{
    uuid_field("vm_id", "the VM to replicate"),
    {.name = "kind", .description = "full: every allocated block; incremental: what changed since the committed "
                                    "change IDs", .one_of = kPassKinds},
}, "NewJob", "a replication pass to start"};

const Schema kJobList{{array_field("jobs", "the jobs, newest first", &kJob)}};

Field job_param() { return uuid_path_param("job_id", "the job"); }

}  // namespace

std::vector<Route> job_routes(const Services& s) {
  JobRepository& job_records = s.repos.jobs;
  JobManager& jobs = s.jobs;
  std::vector<Route> routes;
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/jobs",
      .operation_id = "startJob",
      .tag = &kJobsTag,
      .summary = "Start a full or incremental replication of a VM",
      .description = "Starts a replication pass of a VM: volumes and exports are prepared (reused on later passes), "
                     "the VMA copies every disk, and the change IDs are committed when every disk is durable.",
      .role = "operator",
      .body = &kStartJobSchema,
      .responses = {{201, "the job, started", &kJob},
                    {404, "no such VM"},
                    {409, "the VM has an active job, has been cut over or is in a test failover"}},
      .handler = [&job_records, &jobs](auto&, const json& b, auto&) -> Reply {
         std::string id = jobs.start(b["vm_id"], b["kind"].get<JobKind>());
         return {201, job_json(job_records.get_job(id)), ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/jobs",
      .operation_id = "listJobs",
      .tag = &kJobsTag,
      .summary = "List jobs (query: vm_id, status)",
      .description = "Every job, or those of one VM and/or in one status, with their totals.",
      .role = "viewer",
      .params = {optional(uuid_field("vm_id", "only the jobs of this VM")),
                 optional(enum_field("status", "only the jobs in this status", kJobStatuses))},
      .responses = {{200, "the jobs", &kJobList}},
      .handler = [&job_records](auto& req, auto&, auto&) -> Reply {
         std::string vm = req.query("vm_id");
         std::string status = req.query("status");  // checked against the job statuses already
         json out = json::array();
         for (const auto& j : job_records.list_jobs(vm, find_enum<JobStatus>(status))) out.push_back(job_json(j));
         return {200, {{"jobs", out}}, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/jobs/{job_id}",
      .operation_id = "getJob",
      .tag = &kJobsTag,
      .summary = "Show a job with its disks, steps and events",
      .description = "A job with the progress of each disk, its steps (what a cutover or test failover did, "
                     "with their outcome) and its log.",
      .role = "viewer",
      .params = {job_param()},
      .responses = {{200, "the job", &kJobDetail}, {404, "no such job"}},
      .handler = [&job_records](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("job_id");
         json out = job_json(job_records.get_job(id));
         out["disks"] = json::array();
         for (const auto& d : job_records.job_disks(id)) out["disks"].push_back(job_disk_json(d));
         out["steps"] = json::array();
         for (const auto& st : job_records.list_steps(id)) {
           out["steps"].push_back({{"seq", st.seq}, {"name", st.name}, {"status", st.status},
                                   {"message", opt_json(st.message)}, {"started_at", st.started_at},
                                   {"finished_at", opt_json(st.finished_at)}});
         }
         out["events"] = json::array();
         for (const auto& e : job_records.list_events(id)) {
           out["events"].push_back({{"seq", e.seq}, {"at", e.at}, {"level", e.level}, {"message", e.message}});
         }
         return {200, out, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/jobs/{job_id}/progress",
      .operation_id = "getJobProgress",
      .tag = &kJobsTag,
      .summary = "A job's progress: totals and per disk",
      .description = "A job's bytes done and planned, throughput and ETA, in all and per disk (the event stream "
                     "sends the same view as it changes).",
      .role = "viewer",
      .params = {job_param()},
      .responses = {{200, "the progress", &kJobProgress}, {404, "no such job"}},
      .handler = [&job_records](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("job_id");
         json out = job_json(job_records.get_job(id));
         out["disks"] = json::array();
         for (const auto& d : job_records.job_disks(id)) out["disks"].push_back(job_disk_json(d));
         return {200, out, ""};
       }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/jobs/{job_id}/cancel",
      .operation_id = "cancelJob",
      .tag = &kJobsTag,
      .summary = "Cancel an active job",
      .description = "Asks an active replication pass to stop; the VMA stops copying and the committed change IDs "
                     "stay as they were, so the next pass redoes the work. Cutovers and test failovers cannot be "
                     "cancelled (they roll back by themselves).",
      .role = "operator",
      .params = {job_param()},
      .responses = {{202, "the job, cancelling", &kJob},
                    {404, "no such job"},
                    {409, "the job has ended or cannot be cancelled"}},
      .handler = [&job_records, &jobs](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("job_id");
         jobs.cancel(id);
         return {202, job_json(job_records.get_job(id)), ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
