// The target volumes (one per VM disk).
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kVolumesTag{"Volumes", "The target volumes (one per VM disk) behind the exports"};

const Schema kVolume{{
    text_field("volume_id", "the volume's id (CloudStack's, or the local backend's)", "vol-4210a4c2-disk0"),
    uuid_field("vm_id", "the VM whose disk it holds"),
    {.name = "disk_key", .description = "VMware device key of that disk", .example = "2000",
     .pattern = kDiskKeyPattern},
    text_field("backend", "the volume backend", "cloudstack"),
    int_field("size_bytes", "its size in bytes", 17179869184),
    text_field("device_path", "its block device on the OMA", "/dev/disk/by-id/virtio-4210a4c26b574d4b9d8e"),
    text_field("status", "its state in the backend", "ready"),
    time_field("created_at", "when it was created"),
}, "Volume", "a target volume for one VM disk"};

const Schema kVolumeList{{array_field("volumes", "every volume", &kVolume)}};

}  // namespace

std::vector<Route> volume_routes(const Services& s) {
  StorageRepository& storage = s.repos.storage;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/volumes",
      .operation_id = "listVolumes",
      .tag = &kVolumesTag,
      .summary = "List target volumes (one per VM disk)",
      .description = "Every target volume (one per VM disk, reused by every pass and by the cutover) with its "
                     "device on the OMA.",
      .role = "viewer",
      .responses = {{200, "the volumes", &kVolumeList}},
      .handler = [&storage](auto&, auto&, auto&) -> Reply {
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
