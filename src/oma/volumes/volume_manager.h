// VolumeManager: one target volume per source disk, identified by (VM, disk key).
//
// ensure_volume() returns the disk's volume, creating it on first use; every later job
// of the same VM and disk gets the same volume, made ready by its backend (a CloudStack
// volume found detached is attached to the OMA again). Reuse is by identity only, never by
// size or position. Does not own the repository or the backend. Thread-safe: two threads
// racing for the same disk end with one volume (the schema's UNIQUE decides, the loser
// removes its storage and takes the winner's).
#pragma once

#include "oma/db/storage_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/volumes/volume_backend.h"

namespace mk::oma {

class VolumeManager {
 public:
  VolumeManager(StorageRepository& storage, VolumeBackend& backend) : storage_(storage), backend_(backend) {}
  VolumeRecord ensure_volume(const DiskRecord& disk);
  // Removes the storage a crash left between its creation and its record (nothing was
  // ever written to it: a pass exports only recorded volumes); returns how many. Run at
  // start, before any job, since a volume being created now is not yet recorded either.
  int remove_unrecorded();
  VolumeBackend& backend() { return backend_; }

 private:
  StorageRepository& storage_;
  VolumeBackend& backend_;
};

}  // namespace mk::oma
