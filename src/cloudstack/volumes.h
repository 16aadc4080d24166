// CloudStackVolumes: the life of the CloudStack volumes that receive a source VM's
// disks (the OMA's "cloudstack" volume backend): create one per source disk, attach it
// to the OMA's own VM, find its Linux device, detach it, delete it.
//
// Ownership is recorded in CloudStack itself, as tags on the volume (which OMA created
// it, for which VM and which disk), so it is provable after a restart and from the
// CloudStack UI. Detach, attach elsewhere and delete act only on a volume whose tags and
// name say this OMA created it for that VM and disk; anything else is refused before a
// request is sent. The Linux device is found only by the volume's id: CloudStack gives
// each disk the serial <first 20 hex digits of the UUID without hyphens>, which udev
// shows as <by_id_dir>/virtio-<serial> on virtio-blk and as
// <by_id_dir>/scsi-0QEMU_QEMU_HARDDISK_<serial> on virtio-scsi (an OMA whose first disk is
// on virtio-scsi gets its data disks there too); either is waited for, neither is ever
// guessed from order or size.
//
// A volume grows with resizeVolume (never shrinks); CloudStack creates a volume of a
// custom disk offering on primary storage only at its first attach (Allocated, then
// Ready).
//
// A CloudStackVolumes borrows the Client (which must outlive it) and copies its config.
// Methods are const and keep no state between calls; it is thread-safe as the Client is.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cloudstack/client.h"

namespace mk::cloudstack {

// A source disk: the VM it belongs to and VMware's device key for it.
struct DiskRef {
  std::string vm_uuid;   // the source VM's instance UUID
  std::string disk_key;  // VMware's device key ("2000"); letters, digits, - _ . only
  uint64_t capacity_bytes = 0;
};

struct Volume {
  std::string id;
  std::string name;
  std::string type;              // "DATADISK" or "ROOT"
  std::string state;             // "Allocated" (never attached), "Ready", ...
  uint64_t size_bytes = 0;
  std::string virtual_machine_id;  // "" when detached
  int device_id = -1;              // -1 when detached
  std::map<std::string, std::string> tags;
};

struct VolumesConfig {
  std::string oma_id;            // this OMA's identity, recorded on every volume it creates
  std::string oma_vm_id;         // the OMA's VM in CloudStack, where volumes are attached
  std::string zone_id;
  std::string disk_offering_id;  // a custom-size offering
  std::string by_id_dir = "/dev/disk/by-id";
  std::chrono::milliseconds device_timeout{std::chrono::seconds(120)};
};

// Tag keys that record ownership.
inline constexpr const char* kTagOma = "migratekit-oma";
inline constexpr const char* kTagVm = "migratekit-vm";
inline constexpr const char* kTagDisk = "migratekit-disk";

class CloudStackVolumes {
 public:
  CloudStackVolumes(const Client& client, VolumesConfig config);

  // createVolume (size: capacity rounded up to GiB, name: volume_name(disk)) and its
  // ownership tags. If tagging fails the new volume is deleted again and the error thrown.
  Volume create(const DiskRef& disk) const;

  // attachVolume to the OMA's VM, then waits for its by-id device; returns that path.
  std::string attach_to_oma(const std::string& volume_id, const DiskRef& disk) const;

  // Attaches an owned, detached volume to another VM (cutover, test failover).
  // device_id: 0 for the root disk, nullopt to let CloudStack pick the next slot.
  void attach_to_vm(const std::string& volume_id, const DiskRef& disk, const std::string& vm_id,
                    std::optional<int> device_id) const;

  // Detaches an owned volume from whichever VM holds it; a detached one is left as is.
  void detach(const std::string& volume_id, const DiskRef& disk) const;

  // Deletes an owned, detached volume.
  void remove(const std::string& volume_id, const DiskRef& disk) const;

  // Grows an owned volume to hold `capacity_bytes` (rounded up to GiB), with
  // resizeVolume; a volume already that large is left alone (it never shrinks). Returns
  // the volume as it is afterwards.
  Volume grow(const std::string& volume_id, const DiskRef& disk, uint64_t capacity_bytes) const;

  // Waits for the volume's by-id link (virtio-<serial> or scsi-0QEMU_QEMU_HARDDISK_<serial>)
  // to exist; returns its path.
  std::string wait_for_device(const std::string& volume_id, const DiskRef& disk) const;

  Volume get(const std::string& volume_id) const;

  // The volume, if this OMA created it for that VM and disk; throws mk::Error otherwise.
  Volume require_owned(const std::string& volume_id, const DiskRef& disk) const;

  // The volumes this OMA created for a VM, from CloudStack's tags (all pages).
  std::vector<Volume> owned_by_vm(const std::string& vm_uuid) const;

  const VolumesConfig& config() const { return config_; }

  static std::string volume_name(const DiskRef& disk);        // "mk-<vm>-disk-<key>"
  static uint64_t size_gib(uint64_t capacity_bytes);          // rounded up, at least 1
  static std::string device_link_name(const std::string& volume_id);  // "virtio-<20 hex>"
  // Every name udev may give the volume's disk: virtio-blk first, then virtio-scsi.
  static std::vector<std::string> device_link_names(const std::string& volume_id);

 private:
  std::string describe(const DiskRef& disk) const;
  const Client& client_;
  VolumesConfig config_;
};

Volume volume_from_json(const Json& v);

}  // namespace mk::cloudstack
