// VolumeBackend: where the target disks live. "local" (LocalVolumeBackend: sparse files
// in the data directory, the embedded default) or "cloudstack" (CloudStackVolumeBackend
// in cloudstack_volumes.h: a CloudStack volume attached to the OMA, seen as
// /dev/disk/by-id/virtio-...).
//
// A backend only creates and removes storage; identity and reuse are the
// VolumeManager's job (by VM and disk key, never by size or order). A backend is told
// which VM and disk the storage is for, so that it can record ownership where the
// storage lives (CloudStack tags). Implementations are thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mk::oma {

// What to create: storage for one source disk.
struct VolumeSpec {
  std::string volume_id;  // a UUID the OMA chose; a backend may use its own id instead
  std::string vm_id, disk_key;
  uint64_t size_bytes = 0;  // at least this much
};

// What was created.
struct CreatedVolume {
  std::string volume_id;    // the id to record (CloudStack's volume UUID for "cloudstack")
  std::string device_path;  // what to export
  uint64_t size_bytes = 0;  // its real size (CloudStack rounds up to whole GiB)
};

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;
  virtual std::string name() const = 0;
  // Creates storage for the spec and returns where it is. Throws mk::Error on failure
  // (and then leaves nothing behind).
  virtual CreatedVolume create(const VolumeSpec& spec) = 0;
  // The size the storage at `device_path` has now (to verify exports against).
  virtual uint64_t size_of(const std::string& device_path) const = 0;
  // Removes storage this backend created for that VM and disk.
  virtual void remove(const VolumeSpec& owner, const std::string& device_path) = 0;
  // Makes recorded storage usable again before a job exports it (a CloudStack volume
  // that is not attached to the OMA is attached and its device waited for); returns
  // the device path. Local files need nothing.
  virtual std::string ready(const VolumeSpec&, const std::string& device_path) { return device_path; }
  // Grows the storage to at least spec.size_bytes (never shrinks it; a disk grown in
  // vCenter); returns its size now. Throws mk::Error naming the volume.
  virtual uint64_t grow(const VolumeSpec& spec, const std::string& device_path) = 0;
  // The volume is recorded in the database: storage created for it is no longer at risk
  // of being forgotten (see unrecorded()).
  virtual void recorded(const CreatedVolume&) {}
  // Storage this backend created whose recording it never heard of: what a crash between
  // create() and the database row left behind. A backend that finds its storage again by
  // owner (CloudStack tags) has none.
  virtual std::vector<CreatedVolume> unrecorded() const { return {}; }
};

// Sparse files DIR/vol-{volume_id}.img, mode 0600, never overwritten. Each is created
// beside a marker DIR/vol-{volume_id}.creating, removed once the volume is recorded, so
// that a file left by a crash in between is known as the OMA's own and unwritten.
class LocalVolumeBackend : public VolumeBackend {
 public:
  explicit LocalVolumeBackend(std::string dir);
  std::string name() const override { return "local"; }
  CreatedVolume create(const VolumeSpec& spec) override;
  uint64_t size_of(const std::string& device_path) const override;
  void remove(const VolumeSpec& owner, const std::string& device_path) override;
  uint64_t grow(const VolumeSpec& spec, const std::string& device_path) override;  // truncates up
  void recorded(const CreatedVolume& v) override;
  std::vector<CreatedVolume> unrecorded() const override;

 private:
  std::string file_path(const std::string& volume_id) const;
  std::string marker_path(const std::string& volume_id) const;
  std::string dir_;
};

}  // namespace mk::oma
