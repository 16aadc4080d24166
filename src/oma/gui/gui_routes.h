// The API routes the GUI needs beyond the core ones, declared in the same route table
// (ApiServer::add_routes, so they are in the OpenAPI document and on both listeners):
//
//   GET    /api/v1/events                  server-sent events (see event_hub.h); needs
//                                          Accept: text/event-stream, else 406
//   GET    /api/v1/vms/{vm_id}/schedule    a VM's repeating incremental pass (404: none)
//   PUT    /api/v1/vms/{vm_id}/schedule    {"interval_minutes": 1..10080, "enabled": bool}
//   DELETE /api/v1/vms/{vm_id}/schedule
//   GET    /api/v1/discover                the VMA's vCenter inventory, each VM marked
//                                          "managed" when the OMA knows it already
//   GET    /api/v1/vma/health              the VMA's health through the tunnel; an
//                                          unreachable VMA is status "unreachable"
//
// The functions keep references to their collaborators, which must outlive the routes.
#pragma once

#include <vector>

#include "oma/api/api_server.h"
#include "oma/gui/event_hub.h"
#include "oma/jobs/scheduler.h"
#include "oma/vma/vma_client.h"

namespace mk::oma::gui {

std::vector<api::Route> gui_routes(VmRepository& vms, ScheduleRepository& schedules, EventHub& events,
                                   Scheduler& scheduler, VmaClient& vma);

}  // namespace mk::oma::gui
