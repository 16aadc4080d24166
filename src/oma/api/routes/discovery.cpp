// The default VMA: its vCenter's inventory and its health, through the tunnel.
#include <fmt/format.h>

#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"

namespace mk::oma::api {

namespace {

using nlohmann::json;

const Tag kDiscoveryTag{"Discovery", "The default VMA: its vCenter's VMs and its health"};

const Schema kDiscovery{{
    text_field("vcenter", "the VMA's vCenter", "vcenter.example.local"),
    array_field("vms", "the VMs it found", &kDiscoveredVm),
}, "Discovery", "the VMs of the default VMA's vCenter"};

const Schema kDefaultVmaHealth{
    join_fields(protocol::schemas::health().fields, {text_field("vma", "which VMA (its URL)", "http://127.0.0.1:9081")}),
    "DefaultVmaHealth", "the default VMA's health as it reports it (the protocol's VmaHealth), and which VMA"};
const Schema kVmaUnreachable{{
    enum_field("status", "the VMA did not answer", {"unreachable"}),
    text_field("vma", "which VMA (its URL)", "http://127.0.0.1:9081"),
    text_field("error", "why", "connection refused"),
}, "VmaUnreachable", "the default VMA did not answer"};
const Schema kDefaultVmaHealthView{.name = "DefaultVmaHealthView",
                                   .description = "the default VMA's health, or that it did not answer",
                                   .one_of = {&kDefaultVmaHealth, &kVmaUnreachable}};

}  // namespace

std::vector<Route> discovery_routes(const Services& s) {
  VmRepository& vms = s.repos.vms;
  VmaClient& vma = s.vma;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/discover",
      .operation_id = "discover",
      .tag = &kDiscoveryTag,
      .summary = "VMs in the VMA's vCenter, each marked managed if the OMA knows it",
      .description = "Asks the default VMA for its vCenter's VMs with their disks and NICs; each is marked managed "
                     "when the OMA has it already. (Paired VMAs: GET /api/v1/vmas/{vma_id}/discover.)",
      .role = "viewer",
      .responses = {{200, "the VMs", &kDiscovery}, {502, "the VMA did not answer (tunnel down?)"}},
      .handler = [&vms, &vma](const Request&, const json&, const Caller&) -> Reply {
                 protocol::Discovery d;
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
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vma/health",
      .operation_id = "getDefaultVmaHealth",
      .tag = &kDiscoveryTag,
      .summary = "The VMA's health (vCenter, tunnel) as the OMA sees it",
      .description = "The default VMA's own report (vCenter reachable, tunnel up), or status unreachable with the "
                     "reason when it does not answer.",
      .role = "viewer",
      .responses = {{200, "the health", &kDefaultVmaHealthView}},
      .handler = [&vma](const Request&, const json&, const Caller&) -> Reply {
                 try {
                   json out = protocol::encode(vma.health());
                   out["vma"] = vma.describe();
                   return {200, out, ""};
                 } catch (const std::exception& e) {
                   return {200, {{"status", "unreachable"}, {"vma", vma.describe()}, {"error", e.what()}}, ""};
                 }
               }});
  return routes;
}

}  // namespace mk::oma::api
