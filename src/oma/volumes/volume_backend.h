// VolumeBackend: where the target disks live. "local" (LocalVolumeBackend: sparse files
// in the data directory, the embedded default) or "cloudstack" (its own issue: a
// CloudStack volume attached to the OMA, seen as /dev/disk/by-id/...).
//
// A backend only creates and removes storage; identity and reuse are the
// VolumeManager's job (by VM and disk key, never by size or order). Implementations are
// thread-safe.
#pragma once

#include <cstdint>
#include <string>

namespace mk::oma {

class VolumeBackend {
 public:
  virtual ~VolumeBackend() = default;
  virtual std::string name() const = 0;
  // Creates storage of `size_bytes` for `volume_id` (a UUID the OMA chose) and returns
  // the device path to export. Throws mk::Error on failure.
  virtual std::string create(const std::string& volume_id, uint64_t size_bytes) = 0;
  // The size the storage at `device_path` has now (to verify exports against).
  virtual uint64_t size_of(const std::string& device_path) const = 0;
  virtual void remove(const std::string& volume_id, const std::string& device_path) = 0;
};

// Sparse files DIR/vol-{volume_id}.img, mode 0600, never overwritten.
class LocalVolumeBackend : public VolumeBackend {
 public:
  explicit LocalVolumeBackend(std::string dir);
  std::string name() const override { return "local"; }
  std::string create(const std::string& volume_id, uint64_t size_bytes) override;
  uint64_t size_of(const std::string& device_path) const override;
  void remove(const std::string& volume_id, const std::string& device_path) override;

 private:
  std::string dir_;
};

}  // namespace mk::oma
