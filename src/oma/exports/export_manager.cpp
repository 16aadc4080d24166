#include "oma/exports/export_manager.h"

#include <fmt/format.h>

#include <chrono>
#include <thread>

#include "common/log.h"
#include "engine/nbd_connection.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {

ExportRecord ExportManager::ensure_export(const DiskRecord& disk, const VolumeRecord& volume) {
  if (volume.vm_id != disk.vm_id || volume.disk_key != disk.disk_key) {
    throw Error(fmt::format("refusing to export volume {} (VM {} disk {}) for VM {} disk {}: it belongs to another disk",
                            volume.volume_id, volume.vm_id, volume.disk_key, disk.vm_id, disk.disk_key));
  }
  if (fence_) fence_(disk.vm_id);
  std::string name = export_name(disk.vm_id, disk.unit);
  auto existing = storage_.find_export(name);
  if (existing) {
    if (existing->volume_id != volume.volume_id) {
      throw Error(fmt::format("export {} serves volume {}, not VM {} disk {}'s volume {}: refusing to repoint it; "
                              "inspect GET /api/v1/exports",
                              name, existing->volume_id, disk.vm_id, disk.disk_key, volume.volume_id));
    }
    if (existing->device_path != volume.device_path || existing->size_bytes != volume.size_bytes) {
      storage_.update_export_device(name, volume.device_path, volume.size_bytes);
      existing = storage_.find_export(name);
    }
    backend_.publish(name, volume.device_path);  // restores a lost symlink; no-op otherwise
    return *existing;
  }
  ExportRecord e{name, volume.volume_id, volume.device_path, backend_.name(), volume.size_bytes, now_ms(), {}};
  backend_.publish(name, volume.device_path);
  try {
    storage_.insert_export(e, disk.vm_id, disk.unit, disk.disk_key);
  } catch (const Conflict&) {
    // Another thread recorded the same export for the same volume: fine. Anything else
    // is a real collision and must not be papered over.
    auto w = storage_.find_export(name);
    if (w && w->volume_id == volume.volume_id) return *w;
    throw;
  }
  return e;
}

void ExportManager::verify(const ExportRecord& e, uint64_t expected_size) {
  Endpoint ep = backend_.endpoint(e.export_name);
  std::unique_ptr<mk::engine::NbdConnection> c;
  // A server that died (nbdkit 1.32 aborts when a client vanishes mid-request) is
  // restarted by its supervisor within a second: a pass must not fail for that, so the
  // connection is tried again for a few seconds before the export counts as dead.
  const auto deadline = std::chrono::steady_clock::now() + kVerifyPatience;
  for (int attempt = 1;; ++attempt) {
    try {
      c = mk::engine::NbdConnection::open(ep);
      break;
    } catch (const std::exception& ex) {
      if (std::chrono::steady_clock::now() >= deadline) {
        throw Error(fmt::format("export {} does not answer on the {} server ({} attempts over {} s): {}",
                                e.export_name, backend_.name(), attempt,
                                std::chrono::duration_cast<std::chrono::seconds>(kVerifyPatience).count(),
                                ex.what()));
      }
      log::warn("export {}: the {} server did not answer ({}); trying again", e.export_name, backend_.name(),
                ex.what());
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  // nbd-server may report 0 until it has opened the file; only a known wrong size fails.
  if (c->size() != expected_size && !(backend_.name() == "nbd-server" && c->size() == 0)) {
    throw Error(fmt::format("export {} has {} bytes but its volume {} has {}: it points at the wrong device; "
                            "check {} and the volume",
                            e.export_name, c->size(), e.volume_id, expected_size, e.device_path));
  }
  storage_.mark_export_verified(e.export_name);
}

}  // namespace mk::oma
