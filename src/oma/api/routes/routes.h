// The OMA's REST routes, one function per resource, each declared in its own file:
//
//   system.cpp            GET /health (no token), GET /metrics (Prometheus)
//   vms.cpp               GET|POST /api/v1/vms, GET /api/v1/vms/{vm_id}, GET .../disks,
//                         GET .../preflight (through the VM's VMA)
//   jobs.cpp              POST|GET /api/v1/jobs, GET /api/v1/jobs/{job_id}, .../progress, .../cancel
//   exports.cpp           GET /api/v1/exports
//   volumes.cpp           GET /api/v1/volumes
//   settings.cpp          GET /api/v1/settings, PUT /api/v1/settings/{name} (admin);
//                         GET|PUT /api/v1/settings/cloudstack, POST .../validate (admin; the
//                         keys are never returned)
//   network_mappings.cpp  GET|PUT /api/v1/network-mappings
//   tokens.cpp            GET|POST /api/v1/tokens, DELETE /api/v1/tokens/{token_id} (admin)
//   vmas.cpp              /api/v1/vmas: pairing bundles, enrolment, list, approve, revoke,
//                         health and discovery through a paired VMA's tunnel
//   cutover.cpp           POST /api/v1/vms/{vm_id}/cutover, .../cutover/rollback, .../test-failover,
//                         .../test-failover/cleanup
//   schedules.cpp         GET|PUT|DELETE /api/v1/vms/{vm_id}/schedule
//   events.cpp            GET /api/v1/events (server-sent events; see gui/event_hub.h)
//   discovery.cpp         GET /api/v1/discover, GET /api/v1/vma/health (the default VMA)
//   nodes.cpp             GET /api/v1/nodes, POST .../{node_id}/drain|activate (admin);
//                         GET|POST /api/v1/vms/{vm_id}/placement, POST .../move (admin)
//   boot_check.cpp        POST|GET /api/v1/vms/{vm_id}/boot-check (start one; the last result)
//   inspection.cpp        POST|GET /api/v1/vms/{vm_id}/inspection (start one; the last result)
//
// GET /api/v1/openapi.json is the ApiServer's own. Declaration order does not matter
// (see router.h). Each route declares the least token role that may call it (route.h):
// viewer for reads, operator to replicate, schedule and test failover, admin to cut over
// and for settings, network mappings, tokens and VMAs. The routes keep references to the collaborators in Services, which
// must outlive the ApiServer.
#pragma once

#include <vector>

#include "oma/api/route.h"
#include "oma/crypto.h"
#include "oma/cutover/boot_check_service.h"
#include "oma/cutover/cutover_service.h"
#include "oma/cutover/inspection_service.h"
#include "oma/db/repositories.h"
#include "oma/exports/export_backend.h"
#include "oma/gui/event_hub.h"
#include "oma/jobs/job_manager.h"
#include "oma/jobs/scheduler.h"
#include "oma/pairing/pairing_service.h"
#include "oma/vma/vma_client.h"

namespace mk::oma::api {

// What the routes work with (not owned).
struct Services {
  Repositories& repos;
  JobManager& jobs;
  ExportBackend& exports;
  SecretBox& secrets;
  PairingService* pairing;  // null: no /api/v1/vmas routes, no tunnel figures
  CutoverService& cutover;
  gui::EventHub& events;
  Scheduler& scheduler;
  VmaClient& vma;  // the default VMA
  std::string node_id = {};  // this OMA's node id ("" : a single OMA)
  BootCheckService* boot_checks = nullptr;  // null: no boot-check routes
  InspectionService* inspections = nullptr;  // null: no inspection routes
};

std::vector<Route> system_routes(const Services& s);
std::vector<Route> vm_routes(const Services& s);
std::vector<Route> job_routes(const Services& s);
std::vector<Route> export_routes(const Services& s);
std::vector<Route> volume_routes(const Services& s);
std::vector<Route> settings_routes(const Services& s);
std::vector<Route> network_mapping_routes(const Services& s);
std::vector<Route> token_routes(const Services& s);
std::vector<Route> vma_routes(const Services& s);
std::vector<Route> cutover_routes(const Services& s);
std::vector<Route> schedule_routes(const Services& s);
std::vector<Route> event_routes(const Services& s);
std::vector<Route> discovery_routes(const Services& s);
std::vector<Route> node_routes(const Services& s);
std::vector<Route> boot_check_routes(const Services& s);
std::vector<Route> inspection_routes(const Services& s);

// All of the above.
std::vector<Route> all_routes(const Services& s);

}  // namespace mk::oma::api
