#include "cloudstack/volumes.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <thread>

#include "common/log.h"

namespace mk::cloudstack {
namespace {

bool is_token(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s) {
    if (!std::isalnum(c) && c != '-' && c != '_' && c != '.') return false;
  }
  return true;
}

void check_disk(const DiskRef& disk) {
  if (!is_token(disk.vm_uuid) || !is_token(disk.disk_key)) {
    throw UsageError(fmt::format("invalid source disk reference (VM '{}', disk '{}'): use "
                                 "letters, digits, '-', '_' and '.' only",
                                 disk.vm_uuid, disk.disk_key));
  }
}

// A CloudStack UUID: 36 characters, hex digits and hyphens at 8-4-4-4-12.
void check_volume_id(const std::string& id) {
  bool ok = id.size() == 36;
  for (size_t i = 0; ok && i < id.size(); ++i) {
    bool hyphen = i == 8 || i == 13 || i == 18 || i == 23;
    ok = hyphen ? id[i] == '-' : std::isxdigit(static_cast<unsigned char>(id[i])) != 0;
  }
  if (!ok) throw UsageError(fmt::format("'{}' is not a CloudStack volume UUID", id));
}

}  // namespace

Volume volume_from_json(const Json& v) {
  Volume out;
  out.id = json_text(v, "id");
  out.name = json_text(v, "name");
  out.type = json_text(v, "type");
  out.state = json_text(v, "state");
  out.size_bytes = static_cast<uint64_t>(std::max<int64_t>(0, json_integer(v, "size", 0)));
  out.virtual_machine_id = json_text(v, "virtualmachineid");
  int64_t device = json_integer(v, "deviceid", -1);
  out.device_id = device >= 0 && device <= INT32_MAX ? static_cast<int>(device) : -1;
  for (const auto& t : json_array(v, "tags")) out.tags[json_text(t, "key")] = json_text(t, "value");
  return out;
}

CloudStackVolumes::CloudStackVolumes(const Client& client, VolumesConfig config)
    : client_(client), config_(std::move(config)) {
  if (config_.oma_id.empty() || config_.oma_vm_id.empty() || config_.zone_id.empty() ||
      config_.disk_offering_id.empty()) {
    throw UsageError("CloudStack volumes: oma_id, oma_vm_id, zone_id and disk_offering_id "
                     "are all required (see the CloudStack settings)");
  }
}

std::string CloudStackVolumes::volume_name(const DiskRef& disk) {
  check_disk(disk);
  return fmt::format("mk-{}-disk-{}", disk.vm_uuid, disk.disk_key);
}

uint64_t CloudStackVolumes::size_gib(uint64_t capacity_bytes) {
  constexpr uint64_t gib = uint64_t{1} << 30;
  return std::max<uint64_t>(1, (capacity_bytes + gib - 1) / gib);
}

// The serial CloudStack gives the volume's disk (LibvirtComputingResource: the UUID
// without hyphens, cut to 20 characters).
static std::string disk_serial(const std::string& volume_id) {
  check_volume_id(volume_id);
  std::string hex;
  for (char c : volume_id) {
    if (c != '-') hex += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return hex.substr(0, 20);
}

std::string CloudStackVolumes::device_link_name(const std::string& volume_id) {
  return "virtio-" + disk_serial(volume_id);
}

std::vector<std::string> CloudStackVolumes::device_link_names(const std::string& volume_id) {
  return {"virtio-" + disk_serial(volume_id), "scsi-0QEMU_QEMU_HARDDISK_" + disk_serial(volume_id)};
}

std::string CloudStackVolumes::describe(const DiskRef& disk) const {
  return fmt::format("VM {} disk {}", disk.vm_uuid, disk.disk_key);
}

Volume CloudStackVolumes::create(const DiskRef& disk) const {
  const std::string name = volume_name(disk);
  if (disk.capacity_bytes == 0) {
    throw UsageError(fmt::format("cannot create a volume for {}: its capacity is unknown (0)",
                                 describe(disk)));
  }
  Json result;
  try {
    result = client_.call_async("createVolume",
                                {{"name", name},
                                 {"zoneid", config_.zone_id},
                                 {"diskofferingid", config_.disk_offering_id},
                                 {"size", std::to_string(size_gib(disk.capacity_bytes))}});
  } catch (const Error& e) {
    throw Error(fmt::format("creating the CloudStack volume for {}: {}", describe(disk), e.what()));
  }
  Volume vol = volume_from_json(json_object(result, "volume"));
  if (vol.id.empty()) throw Error(fmt::format("createVolume for {} returned no volume id", describe(disk)));
  try {
    client_.call_async("createTags", {{"resourceids", vol.id},
                                      {"resourcetype", "Volume"},
                                      {"tags[0].key", kTagOma},
                                      {"tags[0].value", config_.oma_id},
                                      {"tags[1].key", kTagVm},
                                      {"tags[1].value", disk.vm_uuid},
                                      {"tags[2].key", kTagDisk},
                                      {"tags[2].value", disk.disk_key}});
  } catch (const Error& e) {
    // An untagged volume could never be proven ours: remove it now rather than leak it.
    try {
      client_.call("deleteVolume", {{"id", vol.id}});
    } catch (const Error& cleanup) {
      log::error("volume {} for {} is untagged and could not be deleted: {}; delete it by hand",
                 vol.id, describe(disk), cleanup.what());
    }
    throw Error(fmt::format("recording ownership of volume {} for {}: {}", vol.id, describe(disk),
                            e.what()));
  }
  vol.tags = {{kTagOma, config_.oma_id}, {kTagVm, disk.vm_uuid}, {kTagDisk, disk.disk_key}};
  log::info("created volume {} ({} GiB) for {}", vol.id, size_gib(disk.capacity_bytes),
            describe(disk));
  return vol;
}

Volume CloudStackVolumes::get(const std::string& volume_id) const {
  check_volume_id(volume_id);
  Json reply = client_.call("listVolumes", {{"id", volume_id}, {"listall", "true"}});
  Json found = json_first(reply, "volume");
  if (found.is_null()) {
    throw Error(fmt::format("volume {} does not exist in CloudStack (or this account cannot see "
                            "it)",
                            volume_id));
  }
  return volume_from_json(found);
}

Volume CloudStackVolumes::require_owned(const std::string& volume_id, const DiskRef& disk) const {
  Volume vol = get(volume_id);
  auto tag = [&](const char* key) {
    auto it = vol.tags.find(key);
    return it == vol.tags.end() ? std::string("<none>") : it->second;
  };
  if (tag(kTagOma) != config_.oma_id || tag(kTagVm) != disk.vm_uuid ||
      tag(kTagDisk) != disk.disk_key || vol.name != volume_name(disk)) {
    throw Error(fmt::format(
        "refusing to touch volume {} ('{}'): it was not created by this OMA for {} (its tags "
        "say OMA {}, VM {}, disk {}); check the volume id in the job",
        volume_id, vol.name, describe(disk), tag(kTagOma), tag(kTagVm), tag(kTagDisk)));
  }
  return vol;
}

std::vector<Volume> CloudStackVolumes::owned_by_vm(const std::string& vm_uuid) const {
  std::vector<Volume> out;
  for (const auto& v : client_.list("listVolumes", "volume",
                                    {{"listall", "true"},
                                     {"tags[0].key", kTagVm},
                                     {"tags[0].value", vm_uuid}})) {
    Volume vol = volume_from_json(v);
    if (vol.tags[kTagOma] == config_.oma_id && vol.tags[kTagVm] == vm_uuid) out.push_back(vol);
  }
  return out;
}

std::string CloudStackVolumes::attach_to_oma(const std::string& volume_id,
                                             const DiskRef& disk) const {
  Volume vol = require_owned(volume_id, disk);
  if (vol.virtual_machine_id != config_.oma_vm_id) {
    attach_to_vm(volume_id, disk, config_.oma_vm_id, std::nullopt);
  }
  return wait_for_device(volume_id, disk);
}

void CloudStackVolumes::attach_to_vm(const std::string& volume_id, const DiskRef& disk,
                                     const std::string& vm_id,
                                     std::optional<int> device_id) const {
  require_owned(volume_id, disk);
  Params p{{"id", volume_id}, {"virtualmachineid", vm_id}};
  if (device_id) p["deviceid"] = std::to_string(*device_id);
  try {
    client_.call_async("attachVolume", p);
  } catch (const Error& e) {
    throw Error(fmt::format("attaching volume {} of {} to VM {}: {}", volume_id, describe(disk),
                            vm_id, e.what()));
  }
}

std::string CloudStackVolumes::wait_for_device(const std::string& volume_id,
                                               const DiskRef& disk) const {
  namespace fs = std::filesystem;
  std::vector<fs::path> links;
  for (const auto& name : device_link_names(volume_id)) links.push_back(fs::path(config_.by_id_dir) / name);
  const auto deadline = std::chrono::steady_clock::now() + config_.device_timeout;
  for (;;) {
    for (const auto& link : links) {
      std::error_code ec;
      if (fs::exists(link, ec)) return link.string();
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw Error(fmt::format(
      "volume {} of {} is attached to the OMA but neither {} nor {} appeared within {} s; check "
      "that udev is running on the OMA and that its disks are virtio or virtio-scsi",
      volume_id, describe(disk), links[0].string(), links[1].filename().string(),
      std::chrono::duration_cast<std::chrono::seconds>(config_.device_timeout).count()));
}

Volume CloudStackVolumes::grow(const std::string& volume_id, const DiskRef& disk, uint64_t capacity_bytes) const {
  Volume vol = require_owned(volume_id, disk);
  uint64_t want = size_gib(capacity_bytes) << 30;
  if (vol.size_bytes >= want) return vol;  // never shrinks
  try {
    Json r = client_.call_async("resizeVolume", {{"id", volume_id}, {"size", std::to_string(size_gib(capacity_bytes))}});
    log::info("volume {} of {} grown to {} GiB", volume_id, describe(disk), size_gib(capacity_bytes));
    return volume_from_json(json_object(r, "volume"));
  } catch (const Error& e) {
    throw Error(fmt::format("growing volume {} of {} to {} GiB: {}", volume_id, describe(disk),
                            size_gib(capacity_bytes), e.what()));
  }
}

void CloudStackVolumes::detach(const std::string& volume_id, const DiskRef& disk) const {
  Volume vol = require_owned(volume_id, disk);
  if (vol.virtual_machine_id.empty()) return;
  try {
    client_.call_async("detachVolume", {{"id", volume_id}});
  } catch (const Error& e) {
    throw Error(fmt::format("detaching volume {} of {} from VM {}: {}", volume_id, describe(disk),
                            vol.virtual_machine_id, e.what()));
  }
}

void CloudStackVolumes::remove(const std::string& volume_id, const DiskRef& disk) const {
  Volume vol = require_owned(volume_id, disk);
  if (!vol.virtual_machine_id.empty()) {
    throw Error(fmt::format("refusing to delete volume {} of {}: it is attached to VM {}; "
                            "detach it first",
                            volume_id, describe(disk), vol.virtual_machine_id));
  }
  try {
    client_.call("deleteVolume", {{"id", volume_id}});
  } catch (const Error& e) {
    throw Error(fmt::format("deleting volume {} of {}: {}", volume_id, describe(disk), e.what()));
  }
  log::info("deleted volume {} of {}", volume_id, describe(disk));
}

}  // namespace mk::cloudstack
