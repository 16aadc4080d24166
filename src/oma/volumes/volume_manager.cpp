#include "oma/volumes/volume_manager.h"

#include <fmt/format.h>

#include <set>

#include "common/log.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {

VolumeRecord VolumeManager::ensure_volume(const DiskRecord& disk) {
  if (auto v = storage_.find_volume(disk.vm_id, disk.disk_key)) {
    if (v->size_bytes < disk.capacity_bytes) {
      // The disk was grown in vCenter: the volume follows before anything is copied.
      uint64_t size = 0;
      try {
        size = backend_.grow({v->volume_id, v->vm_id, v->disk_key, static_cast<uint64_t>(disk.capacity_bytes)},
                             v->device_path);
      } catch (const std::exception& e) {
        // Never copy into a volume smaller than the disk: the end of the disk would be lost.
        throw Error(fmt::format("VM {} disk {} has grown to {} bytes in vCenter, but its {} volume {} ({} bytes) "
                                "could not grow: {}; nothing was copied: grow the volume to at least {} bytes (or "
                                "remove what stops it), then start a full pass",
                                disk.vm_id, disk.disk_key, disk.capacity_bytes, backend_.name(), v->volume_id,
                                v->size_bytes, e.what(), disk.capacity_bytes));
      }
      if (size < static_cast<uint64_t>(disk.capacity_bytes)) {
        throw Error(fmt::format("VM {} disk {}: volume {} grew to {} bytes only; the disk has {}", disk.vm_id,
                                disk.disk_key, v->volume_id, size, disk.capacity_bytes));
      }
      storage_.set_volume_size(v->volume_id, static_cast<int64_t>(size));
      log::info("VM {} disk {}: volume {} grown from {} to {} bytes", disk.vm_id, disk.disk_key, v->volume_id,
                v->size_bytes, size);
      v->size_bytes = static_cast<int64_t>(size);
    }
    std::string device = backend_.ready({v->volume_id, v->vm_id, v->disk_key, static_cast<uint64_t>(v->size_bytes)},
                                        v->device_path);
    if (device != v->device_path) {
      throw Error(fmt::format("VM {} disk {}: volume {} is now at {}, not at its recorded {}", disk.vm_id,
                              disk.disk_key, v->volume_id, device, v->device_path));
    }
    return *v;
  }
  VolumeRecord v;
  v.volume_id = new_uuid();
  v.vm_id = disk.vm_id;
  v.disk_key = disk.disk_key;
  v.backend = backend_.name();
  v.size_bytes = disk.capacity_bytes;
  v.status = VolumeStatus::Ready;
  v.created_at = now_ms();
  VolumeSpec spec{v.volume_id, disk.vm_id, disk.disk_key, static_cast<uint64_t>(disk.capacity_bytes)};
  CreatedVolume created = backend_.create(spec);
  spec.volume_id = v.volume_id = created.volume_id;
  v.device_path = created.device_path;
  v.size_bytes = static_cast<int64_t>(created.size_bytes);
  try {
    storage_.insert_volume(v);
  } catch (const Conflict&) {
    backend_.remove(spec, v.device_path);  // another thread won the race
    if (auto w = storage_.find_volume(disk.vm_id, disk.disk_key)) return *w;
    throw;
  } catch (...) {
    backend_.remove(spec, v.device_path);
    throw;
  }
  backend_.recorded(created);
  log::info("VM {} disk {}: created {} volume {} ({} bytes) at {}", disk.vm_id, disk.disk_key, v.backend, v.volume_id,
            v.size_bytes, v.device_path);
  return v;
}

int VolumeManager::remove_unrecorded() {
  std::set<std::string> recorded;
  for (const auto& v : storage_.list_volumes()) recorded.insert(v.volume_id);
  int removed = 0;
  for (const auto& c : backend_.unrecorded()) {
    if (recorded.count(c.volume_id)) {
      backend_.recorded(c);  // the crash came after the row was written
      continue;
    }
    backend_.remove({c.volume_id, "", "", c.size_bytes}, c.device_path);
    log::warn("removed {} volume {} at {}: it was created just before the OMA stopped and never recorded, so no "
              "disk was ever copied into it",
              backend_.name(), c.volume_id, c.device_path);
    ++removed;
  }
  return removed;
}

}  // namespace mk::oma
