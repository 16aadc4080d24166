// The default VMA: its vCenter's inventory and its health, through the tunnel.
#include <fmt/format.h>

#include "oma/api/routes/routes.h"
#include "oma/api/views.h"

namespace mk::oma::api {

using nlohmann::json;

std::vector<Route> discovery_routes(const Services& s) {
  VmRepository& vms = s.repos.vms;
  VmaClient& vma = s.vma;
  std::vector<Route> routes;
  routes.push_back({"GET", "/api/v1/discover", "VMs in the VMA's vCenter, each marked managed if the OMA knows it",
               "operator", nullptr, [&vms, &vma](const Request&, const json&, const Caller&) -> Reply {
                 Discovery d;
                 try {
                   d = vma.discover();
                 } catch (const std::exception& e) {
                   return {502, {{"error", fmt::format("discovery through {} failed: {}; check the VMA and its "
                                                       "tunnel (Infrastructure page)",
                                                       vma.describe(), e.what())}}, ""};
                 }
                 json found = json::array();
                 for (const auto& v : d.vms) found.push_back(discovered_vm_json(v, vms.find_vm(v.vm_id).has_value()));
                 return {200, {{"vcenter", d.vcenter}, {"vms", found}}, ""};
               }});
  routes.push_back({"GET", "/api/v1/vma/health", "The VMA's health (vCenter, tunnel) as the OMA sees it", "operator",
               nullptr, [&vma](const Request&, const json&, const Caller&) -> Reply {
                 try {
                   VmaHealth h = vma.health();
                   return {200,
                           {{"status", h.status},
                            {"vma", vma.describe()},
                            {"vma_instance", h.vma_instance},
                            {"vcenter", {{"reachable", h.vcenter_reachable}, {"error", opt_json(h.vcenter_error)}}},
                            {"tunnel", {{"state", h.tunnel_state}, {"since", h.tunnel_since},
                                        {"error", opt_json(h.tunnel_error)}}}},
                           ""};
                 } catch (const std::exception& e) {
                   return {200, {{"status", "unreachable"}, {"vma", vma.describe()}, {"error", e.what()}}, ""};
                 }
               }});
  return routes;
}

}  // namespace mk::oma::api
