#include "oma/volumes/cloudstack_volumes.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/log.h"

namespace mk::oma {

uint64_t device_size(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw Error(fmt::format("cannot open {}: {} (is the volume attached to the OMA?)", path, std::strerror(errno)));
  }
  off_t end = ::lseek(fd, 0, SEEK_END);
  int e = errno;
  ::close(fd);
  if (end < 0) throw Error(fmt::format("cannot find the size of {}: {}", path, std::strerror(e)));
  return static_cast<uint64_t>(end);
}

CreatedVolume CloudStackVolumeBackend::create(const VolumeSpec& spec) {
  auto volumes = source_();
  cloudstack::DiskRef disk{spec.vm_id, spec.disk_key, spec.size_bytes};
  const std::string name = cloudstack::CloudStackVolumes::volume_name(disk);
  std::optional<cloudstack::Volume> vol;
  for (const auto& v : volumes->owned_by_vm(spec.vm_id)) {
    auto it = v.tags.find(cloudstack::kTagDisk);
    if (it != v.tags.end() && it->second == spec.disk_key && v.name == name) vol = v;
  }
  bool adopted = vol.has_value();
  if (adopted) {
    log::warn("VM {} disk {}: adopting CloudStack volume {}, which this OMA created earlier but never recorded",
              spec.vm_id, spec.disk_key, vol->id);
  } else {
    vol = volumes->create(disk);
  }
  try {
    std::string device = volumes->attach_to_oma(vol->id, disk);
    uint64_t size = device_size(device);
    if (size < spec.size_bytes) {
      throw Error(fmt::format("volume {} of VM {} disk {} has {} bytes at {} but the disk needs {}", vol->id,
                              spec.vm_id, spec.disk_key, size, device, spec.size_bytes));
    }
    return {vol->id, device, size};
  } catch (const std::exception& e) {
    // Nothing half-made is left: the volume goes again (it is ours, by its tags).
    try {
      volumes->detach(vol->id, disk);
      volumes->remove(vol->id, disk);
    } catch (const std::exception& cleanup) {
      log::error("volume {} of VM {} disk {} could not be removed after a failed attach: {}; it is tagged as "
                 "ours and will be adopted by the next job",
                 vol->id, spec.vm_id, spec.disk_key, cleanup.what());
    }
    throw Error(fmt::format("VM {} disk {}: CloudStack volume {}: {}", spec.vm_id, spec.disk_key, vol->id,
                            e.what()));
  }
}

uint64_t CloudStackVolumeBackend::size_of(const std::string& device_path) const { return device_size(device_path); }

std::string CloudStackVolumeBackend::ready(const VolumeSpec& owner, const std::string&) {
  auto volumes = source_();
  return volumes->attach_to_oma(owner.volume_id, {owner.vm_id, owner.disk_key, owner.size_bytes});
}

uint64_t CloudStackVolumeBackend::grow(const VolumeSpec& spec, const std::string&) {
  auto volumes = source_();
  return volumes->grow(spec.volume_id, {spec.vm_id, spec.disk_key, spec.size_bytes}, spec.size_bytes).size_bytes;
}

void CloudStackVolumeBackend::remove(const VolumeSpec& owner, const std::string&) {
  auto volumes = source_();
  cloudstack::DiskRef disk{owner.vm_id, owner.disk_key, owner.size_bytes};
  volumes->detach(owner.volume_id, disk);  // refuses a volume that is not ours
  volumes->remove(owner.volume_id, disk);
}

}  // namespace mk::oma
