// The target volumes (one per VM disk).
#include "oma/api/routes/routes.h"

namespace mk::oma::api {

using nlohmann::json;

std::vector<Route> volume_routes(const Services& s) {
  StorageRepository& storage = s.repos.storage;
  std::vector<Route> routes;
  routes.push_back({"GET", "/api/v1/volumes", "List target volumes (one per VM disk)", "operator", nullptr,
       [&storage](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& v : storage.list_volumes()) {
           out.push_back({{"volume_id", v.volume_id}, {"vm_id", v.vm_id}, {"disk_key", v.disk_key},
                          {"backend", v.backend}, {"size_bytes", v.size_bytes}, {"device_path", v.device_path},
                          {"status", v.status}, {"created_at", v.created_at}});
         }
         return {200, {{"volumes", out}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
