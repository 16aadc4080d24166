// CloudStackVolumeBackend: the OMA's "cloudstack" volume backend. Each source disk gets
// a CloudStack volume (cloudstack::CloudStackVolumes: created with ownership tags for
// this OMA, VM and disk, sized to the capacity rounded up to GiB), attached to the OMA's
// own VM; the device exported is /dev/disk/by-id/virtio-<first 20 hex digits of the
// volume UUID> (the by-id directory is configurable for tests), waited for, never
// guessed. The recorded volume id is CloudStack's own.
//
// A volume this OMA created for the same VM and disk but never recorded (the OMA
// stopped between createVolume and its database write) is adopted instead of creating
// a second one: the tags prove it is ours.
//
// The backend gets its CloudStackVolumes from a source function each call, so that new
// CloudStack settings take effect without a restart; the source throws UsageError
// while CloudStack is not configured. Thread-safe (each call stands alone).
#pragma once

#include <functional>
#include <memory>

#include "cloudstack/volumes.h"
#include "oma/volumes/volume_backend.h"

namespace mk::oma {

using CloudStackVolumesSource = std::function<std::shared_ptr<const cloudstack::CloudStackVolumes>()>;

class CloudStackVolumeBackend : public VolumeBackend {
 public:
  explicit CloudStackVolumeBackend(CloudStackVolumesSource source) : source_(std::move(source)) {}
  std::string name() const override { return "cloudstack"; }
  CreatedVolume create(const VolumeSpec& spec) override;
  // The size of the block device (or file, in tests) behind the by-id link.
  uint64_t size_of(const std::string& device_path) const override;
  // Detaches (if attached) and deletes the volume, only if this OMA created it for
  // that VM and disk.
  void remove(const VolumeSpec& owner, const std::string& device_path) override;
  // Attaches the volume to the OMA if it is not there (only ours) and waits for its device.
  std::string ready(const VolumeSpec& owner, const std::string& device_path) override;
  // resizeVolume to whole GiB (only ours); the device follows.
  uint64_t grow(const VolumeSpec& spec, const std::string& device_path) override;

 private:
  CloudStackVolumesSource source_;
};

// Size of a block device or a file: what a reader sees at the end (lseek), which is
// right for both, unlike stat's st_size on a block device.
uint64_t device_size(const std::string& path);

}  // namespace mk::oma
