// Cutover and test failover of a replicated VM (each starts a job; 202 {"job_id", "status"}).
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Tag kCutoverTag{"Cutover", "Cutover of a replicated VM into CloudStack, and test failovers that leave the source running"};

const Schema kCutover{{
    {.name = "shutdown_timeout_seconds", .type = Type::Integer, .required = false,
     .description = "guest shutdown time before a power off (default 300)", .min = 1, .max = 86400, .example = 300},
}, "CutoverOptions", "how to cut over"};

}  // namespace

std::vector<Route> cutover_routes(const Services& s) {
  CutoverService& service = s.cutover;
  JobRepository& job_records = s.repos.jobs;
  std::vector<Route> routes;
  auto job_reply = [&job_records](const std::string& id) -> Reply {
    return {202, {{"job_id", id}, {"status", job_records.get_job(id).status}}, ""};
  };
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/cutover",
      .operation_id = "cutOverVm",
      .tag = &kCutoverTag,
      .summary = "Cut a replicated VM over: final pass with the source shut down, then the VM built in CloudStack",
      .description = "Starts a cutover job: the guest is shut down (powered off after the timeout), a final "
                     "incremental pass copies the last changes, the guest is converted and the VM is built in "
                     "CloudStack from the volumes. A failed step rolls back and powers the source on again.",
      .role = "admin",
      .params = {vm_id_path_param()},
      .body = &kCutover,
      .body_optional = true,
      .responses = {{202, "the cutover job, started", &kJobStarted},
                    {404, "no such VM"},
                    {409, "the VM is not ready (no committed change IDs, an active job, cut over already)"}},
      .handler = [&service, job_reply](auto& req, const json& b, auto&) -> Reply {
                 return job_reply(service.start_cutover(req.param("vm_id"),
                                                        b.value("shutdown_timeout_seconds", 300)));
               }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/cutover/rollback",
      .operation_id = "finishCutoverRollback",
      .tag = &kCutoverTag,
      .summary = "Finish the rollback of a cutover whose rollback did not finish (VM status cutover_failed)",
      .description = "Starts a job (kind cutover, step rollback) that undoes what the failed cutover left, as its "
                     "job's error names it: the CloudStack VM destroyed (our volumes detached first), the volumes "
                     "attached to the OMA and exported again, the source powered on if it ran before. What is "
                     "already undone is skipped. On success the VM is as before the cutover and replication "
                     "goes on; otherwise it stays cutover_failed and the job says what is still left.",
      .role = "admin",
      .params = {vm_id_path_param()},
      .responses = {{202, "the rollback job, started", &kJobStarted},
                    {404, "no such VM"},
                    {409, "the VM has no cutover whose rollback is incomplete, or has an active job"}},
      .handler = [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_cutover_rollback(req.param("vm_id")));
               }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/test-failover",
      .operation_id = "startTestFailover",
      .tag = &kCutoverTag,
      .summary = "Boot a copy of a replicated VM on the test network; the source keeps running",
      .description = "Starts a test failover job: the volumes are snapshotted and a test VM boots from them on "
                     "the test network while the source keeps running and replicating stops.",
      .role = "operator",
      .params = {vm_id_path_param()},
      .responses = {{202, "the test failover job, started", &kJobStarted},
                    {404, "no such VM"},
                    {409, "the VM is not ready, has an active job or is in a test failover already"}},
      .handler = [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_test_failover(req.param("vm_id")));
               }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/test-failover/cleanup",
      .operation_id = "cleanUpTestFailover",
      .tag = &kCutoverTag,
      .summary = "Destroy the test VM, revert and delete the snapshots, give the volumes back to replication",
      .description = "Starts the job that ends a test failover: the test VM is destroyed, the volumes are "
                     "reverted to their snapshots (so replication continues from its committed change IDs) and "
                     "the snapshots deleted.",
      .role = "operator",
      .params = {vm_id_path_param()},
      .responses = {{202, "the cleanup job, started", &kJobStarted},
                    {404, "no such VM"},
                    {409, "the VM is not in a test failover, or has an active job"}},
      .handler = [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_test_failover_cleanup(req.param("vm_id")));
               }});
  return routes;
}

}  // namespace mk::oma::api
