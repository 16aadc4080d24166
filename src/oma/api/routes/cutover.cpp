// Cutover and test failover of a replicated VM (each starts a job; 202 {"job_id", "status"}).
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Schema kCutover{{
    {.name = "shutdown_timeout_seconds", .type = Type::Integer, .required = false,
     .description = "guest shutdown time before a power off (default 300)", .min = 1, .max = 86400},
}};

}  // namespace

std::vector<Route> cutover_routes(const Services& s) {
  CutoverService& service = s.cutover;
  JobRepository& job_records = s.repos.jobs;
  std::vector<Route> routes;
  auto job_reply = [&job_records](const std::string& id) -> Reply {
    return {202, {{"job_id", id}, {"status", job_records.get_job(id).status}}, ""};
  };
  routes.push_back({"POST", "/api/v1/vms/{vm_id}/cutover",
               "Cut a replicated VM over: final pass with the source shut down, then the VM built in CloudStack",
               "operator", &kCutover,
               [&service, job_reply](auto& req, const json& b, auto&) -> Reply {
                 return job_reply(service.start_cutover(uuid_param(req, "vm_id"),
                                                        b.value("shutdown_timeout_seconds", 300)));
               },
               true});
  routes.push_back({"POST", "/api/v1/vms/{vm_id}/test-failover",
               "Boot a copy of a replicated VM on the test network; the source keeps running", "operator", nullptr,
               [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_test_failover(uuid_param(req, "vm_id")));
               }});
  routes.push_back({"POST", "/api/v1/vms/{vm_id}/test-failover/cleanup",
               "Destroy the test VM, revert and delete the snapshots, give the volumes back to replication",
               "operator", nullptr, [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_test_failover_cleanup(uuid_param(req, "vm_id")));
               }});
  return routes;
}

}  // namespace mk::oma::api
