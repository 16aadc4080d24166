// VMware network -> CloudStack network mappings (used by cutover and test failover).
#include <fmt/format.h>

#include <set>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Tag kNetworkMappingsTag{"Network mappings", "Which CloudStack network each VMware network maps to at cutover"};

const Schema kMapping{{
    {.name = "source_network", .description = "VMware network (port group) name", .max_length = 255,
     .example = "VM Network"},
    {.name = "target_network_id", .description = "CloudStack network", .max_length = 64, .check = id_check,
     .example = "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e", .pattern = kCloudStackIdPattern},
    {.name = "keep_mac", .type = Type::Boolean, .required = false,
     .description = "the network accepts the source NIC's MAC (default true)", .example = true},
}, "NewNetworkMapping", "a VMware network and the CloudStack network it maps to"};
const Schema kMappings{{
    {.name = "mappings", .type = Type::Array, .description = "every mapping (replaces the stored ones)",
     .max_length = 1024, .items = &kMapping},
}, "NetworkMappingsUpdate", "the new mappings"};

const Schema kMappingView{{
    text_field("source_network", "VMware network (port group) name", "VM Network"),
    text_field("target_network_id", "CloudStack network", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    bool_field("keep_mac", "the network accepts the source NIC's MAC"),
}, "NetworkMapping", "a VMware network and the CloudStack network it maps to"};
const Schema kMappingsView{{array_field("mappings", "every mapping", &kMappingView)}, "NetworkMappings",
                           "the network mappings"};

json mappings_view(CloudStackTarget& target) {
  json out = json::array();
  for (const auto& m : target.network_mappings()) {
    out.push_back({{"source_network", m.source_network}, {"target_network_id", m.target_network_id},
                   {"keep_mac", m.keep_mac}});
  }
  return {{"mappings", out}};
}

}  // namespace

std::vector<Route> network_mapping_routes(const Services& s) {
  CutoverService& service = s.cutover;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/network-mappings",
      .operation_id = "listNetworkMappings",
      .tag = &kNetworkMappingsTag,
      .summary = "VMware network -> CloudStack network mappings",
      .description = "Which CloudStack network a migrated VM's NIC joins, by the VMware network it was on, and "
                     "whether that network accepts the source MAC.",
      .role = "viewer",
      .responses = {{200, "the mappings", &kMappingsView}},
      .handler = [&service](auto&, auto&, auto&) -> Reply { return {200, mappings_view(service.target()), ""}; }});
  routes.push_back({
      .method = "PUT",
      .path = "/api/v1/network-mappings",
      .operation_id = "putNetworkMappings",
      .tag = &kNetworkMappingsTag,
      .summary = "Replace the network mappings",
      .description = "Replaces every mapping; each VMware network may be mapped once.",
      .role = "admin",
      .body = &kMappings,
      .responses = {{200, "the mappings, saved", &kMappingsView}},
      .handler = [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = service.target();
                 std::vector<NetworkMappingRow> rows;
                 std::set<std::string> seen;
                 for (size_t i = 0; i < b["mappings"].size(); ++i) {
                   const json& m = b["mappings"][i];
                   std::string source = m["source_network"];
                   if (source.empty() || !seen.insert(source).second) {
                     throw FieldError(fmt::format("mappings[{}].source_network", i),
                                      source.empty() ? "must not be empty" : "is mapped twice");
                   }
                   rows.push_back({source, m["target_network_id"], m.value("keep_mac", true)});
                 }
                 t.save_network_mappings(rows);
                 return {200, mappings_view(t), ""};
               }});
  return routes;
}

}  // namespace mk::oma::api
