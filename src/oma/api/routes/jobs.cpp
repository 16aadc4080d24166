// Replication jobs: start, list, show, progress, cancel.
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/names.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Schema kStartJobSchema{{
    {.name = "vm_id", .max_length = 36, .check = uuid_check},
    {.name = "kind", .one_of = {enum_name(JobKind::Full), enum_name(JobKind::Incremental)}},
}};

}  // namespace

std::vector<Route> job_routes(const Services& s) {
  JobRepository& job_records = s.repos.jobs;
  JobManager& jobs = s.jobs;
  std::vector<Route> routes;
  routes.push_back({"POST", "/api/v1/jobs", "Start a full or incremental replication of a VM", "operator", &kStartJobSchema,
       [&job_records, &jobs](auto&, const json& b, auto&) -> Reply {
         std::string id = jobs.start(b["vm_id"], b["kind"].get<JobKind>());
         return {201, job_json(job_records.get_job(id)), ""};
       }});
  routes.push_back({"GET", "/api/v1/jobs", "List jobs (query: vm_id, status)", "operator", nullptr,
       [&job_records](auto& req, auto&, auto&) -> Reply {
         std::string vm = req.query("vm_id");
         std::string status = req.query("status");
         if (!vm.empty() && !is_uuid(vm)) throw FieldError("vm_id", "must be a lowercase UUID");
         std::optional<JobStatus> wanted;
         if (!status.empty() && !(wanted = find_enum<JobStatus>(status)))
           throw FieldError("status", "is not a job status");
         json out = json::array();
         for (const auto& j : job_records.list_jobs(vm, wanted)) out.push_back(job_json(j));
         return {200, {{"jobs", out}}, ""};
       }});
  routes.push_back({"GET", "/api/v1/jobs/{job_id}", "Show a job with its disks, steps and events", "operator", nullptr,
       [&job_records](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "job_id");
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
  routes.push_back({"GET", "/api/v1/jobs/{job_id}/progress", "A job's progress: totals and per disk", "operator", nullptr,
       [&job_records](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "job_id");
         json out = job_json(job_records.get_job(id));
         out["disks"] = json::array();
         for (const auto& d : job_records.job_disks(id)) out["disks"].push_back(job_disk_json(d));
         return {200, out, ""};
       }});
  routes.push_back({"POST", "/api/v1/jobs/{job_id}/cancel", "Cancel an active job", "operator", nullptr,
       [&job_records, &jobs](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "job_id");
         jobs.cancel(id);
         return {202, job_json(job_records.get_job(id)), ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
