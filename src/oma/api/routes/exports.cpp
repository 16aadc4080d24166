// The NBD exports (one per VM disk).
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"

namespace mk::oma::api {

using nlohmann::json;

std::vector<Route> export_routes(const Services& s) {
  StorageRepository& storage = s.repos.storage;
  ExportBackend& exports = s.exports;
  std::vector<Route> routes;
  routes.push_back({"GET", "/api/v1/exports", "List NBD exports (one per VM disk)", "operator", nullptr,
       [&storage, &exports](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& e : storage.list_exports()) {
           out.push_back({{"name", e.export_name}, {"volume_id", e.volume_id}, {"device_path", e.device_path},
                          {"size_bytes", e.size_bytes}, {"backend", e.backend}, {"created_at", e.created_at},
                          {"verified_at", opt_json(e.verified_at)}});
         }
         return {200, {{"exports", out}, {"server_pid", exports.server_pid()}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
