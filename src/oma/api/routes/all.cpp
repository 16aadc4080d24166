#include "oma/api/routes/routes.h"

namespace mk::oma::api {

std::vector<Route> all_routes(const Services& s) {
  std::vector<Route> all;
  for (auto* group : {system_routes, vm_routes, job_routes, export_routes, volume_routes, settings_routes,
                      network_mapping_routes, token_routes, vma_routes, cutover_routes, schedule_routes, event_routes,
                      discovery_routes, node_routes, boot_check_routes, inspection_routes}) {
    for (auto& r : group(s)) all.push_back(std::move(r));
  }
  return all;
}

}  // namespace mk::oma::api
