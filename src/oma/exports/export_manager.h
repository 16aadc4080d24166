// ExportManager: one NBD export per source disk, named migration-vm-{vmUUID}-disk{unit},
// serving that disk's volume; recorded in the database and published on the backend.
//
// ensure_export() is idempotent and reuses the export for every later job of the same
// VM and disk. If the volume's device path changed (a reattached CloudStack volume) the
// export is repointed atomically. verify() connects to the export over NBD (with TLS)
// and checks its size against the volume before a job may copy into it.
//
// Fencing on an OMA node of several (issue 18): before every export change the fence
// (set_fence) checks in the database that this node holds its lease and the VM is
// placed on it, and throws Conflict otherwise; a node that lost a VM to another node's
// takeover never points an export at its volumes again. set_fence() once, before use.
//
// Does not own the repository or the backend. Thread-safe.
#pragma once

#include <chrono>

#include <functional>

#include "oma/db/storage_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/exports/export_backend.h"

namespace mk::oma {

class ExportManager {
 public:
  ExportManager(StorageRepository& storage, ExportBackend& backend) : storage_(storage), backend_(backend) {}

  // Throws Conflict (from the fence) when this node may not change the VM's exports.
  ExportRecord ensure_export(const DiskRecord& disk, const VolumeRecord& volume);
  // Called with the VM's id before every export change; throws to refuse it.
  using Fence = std::function<void(const std::string& vm_id)>;
  void set_fence(Fence fence) { fence_ = std::move(fence); }
  // Throws mk::Error naming the export if it cannot be opened within kVerifyPatience (a
  // server being restarted by its supervisor gets that long) or has the wrong size.
  void verify(const ExportRecord& e, uint64_t expected_size);
  static constexpr std::chrono::seconds kVerifyPatience{5};
  ExportBackend& backend() { return backend_; }

 private:
  StorageRepository& storage_;
  ExportBackend& backend_;
  Fence fence_;  // none: a single OMA
};

}  // namespace mk::oma
