// The REST routes of cutover, test failover and the CloudStack settings, for the
// ApiServer's table (declared there before the built-in routes, so that
// PUT /api/v1/settings/cloudstack is not taken for the generic PUT /settings/{name}).
//
//   POST /api/v1/vms/{vm_id}/cutover                 {"shutdown_timeout_seconds"?} -> 202 {"job_id"}
//   POST /api/v1/vms/{vm_id}/test-failover                                        -> 202 {"job_id"}
//   POST /api/v1/vms/{vm_id}/test-failover/cleanup                                -> 202 {"job_id"}
//   GET|PUT /api/v1/settings/cloudstack       (admin; the keys are never returned)
//   POST /api/v1/settings/cloudstack/validate (admin) -> {"ok", "problems": [{"field","message"}]}
//   GET|PUT /api/v1/network-mappings          {"mappings": [{"source_network","target_network_id","keep_mac"}]}
//
// The routes borrow the service; it must outlive the ApiServer.
#pragma once

#include <vector>

#include "oma/api/api_server.h"
#include "oma/cutover/cutover_service.h"

namespace mk::oma {

std::vector<api::Route> cutover_routes(CutoverService& service, JobRepository& jobs);

}  // namespace mk::oma
