// VMware network -> CloudStack network mappings (used by cutover and test failover).
#include <fmt/format.h>

#include <set>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Schema kMapping{{
    {.name = "source_network", .description = "VMware network (port group) name", .max_length = 255},
    {.name = "target_network_id", .description = "CloudStack network", .max_length = 64, .check = id_check},
    {.name = "keep_mac", .type = Type::Boolean, .required = false,
     .description = "the network accepts the source NIC's MAC (default true)"},
}};
const Schema kMappings{{
    {.name = "mappings", .type = Type::Array, .max_length = 1024, .items = &kMapping},
}};

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
  routes.push_back({"GET", "/api/v1/network-mappings", "VMware network -> CloudStack network mappings", "operator",
               nullptr, [&service](auto&, auto&, auto&) -> Reply { return {200, mappings_view(service.target()), ""}; }});
  routes.push_back({"PUT", "/api/v1/network-mappings", "Replace the network mappings", "operator", &kMappings,
               [&service](auto&, const json& b, auto&) -> Reply {
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
