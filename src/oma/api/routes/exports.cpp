// The NBD exports (one per VM disk).
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kExportsTag{"Exports", "The NBD exports (one per VM disk) that the VMAs write into"};

const Schema kExport{{
    text_field("name", "the export's name", "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk0"),
    text_field("volume_id", "the volume it serves", "vol-4210a4c2-disk0"),
    text_field("device_path", "the block device (or file) behind it", "/dev/disk/by-id/virtio-4210a4c26b574d4b9d8e"),
    int_field("size_bytes", "its size in bytes", 17179869184),
    text_field("backend", "the volume backend", "cloudstack"),
    time_field("created_at", "when it was created"),
    nullable(time_field("verified_at", "when the server last served it")),
}, "Export", "an NBD export of one VM disk"};

const Schema kExportList{{
    array_field("exports", "every export", &kExport),
    int_field("server_pid", "the export server's process id (0 or -1: not running)", 4242, -1),
}};

}  // namespace

std::vector<Route> export_routes(const Services& s) {
  StorageRepository& storage = s.repos.storage;
  ExportBackend& exports = s.exports;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/exports",
      .operation_id = "listExports",
      .tag = &kExportsTag,
      .summary = "List NBD exports (one per VM disk)",
      .description = "Every NBD export the OMA serves (one per VM disk, reused by every pass of that VM) with "
                     "its volume and device, and the export server's process id.",
      .role = "viewer",
      .responses = {{200, "the exports", &kExportList}},
      .handler = [&storage, &exports](auto&, auto&, auto&) -> Reply {
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
