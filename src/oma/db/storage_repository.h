// StorageRepository: where each source disk lands on the OMA: its target volume
// (volumes) and the NBD export that serves it (nbd_exports, vm_export_mappings).
//
// Invariants, backed by UNIQUE constraints in the schema:
//  - a disk (VM, disk key) has at most one volume, for good: insert_volume throws
//    Conflict for a second one, and links the volume to the disk (vm_disks.volume_id)
//    in the same transaction (NotFound, nothing stored, for an unknown disk);
//  - an export serves exactly one volume of one disk, and a (VM, unit) has one export:
//    insert_export records the export, its (VM, unit) mapping and its link on the disk
//    (vm_disks.export_name) in one transaction, or throws Conflict and stores nothing.
// The links are columns of vm_disks, whose rows VmRepository owns.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"

namespace mk::oma {

// A volume's state (volumes.status). Volumes are recorded once created and ready;
// where one is attached is its backend's business (volumes/).
enum class VolumeStatus { Ready };
const EnumTable<VolumeStatus>& enum_table(VolumeStatus);

struct VolumeRecord {
  std::string volume_id, vm_id, disk_key, backend, device_path;
  VolumeStatus status = VolumeStatus::Ready;
  int64_t size_bytes = 0, created_at = 0;
};

struct ExportRecord {
  std::string export_name, volume_id, device_path, backend;
  int64_t size_bytes = 0, created_at = 0;
  std::optional<int64_t> verified_at;
};

class StorageRepository {
 public:
  explicit StorageRepository(db::Database& db) : db_(db) {}

  // Volumes, by identity (VM, disk key).
  std::optional<VolumeRecord> find_volume(const std::string& vm_id, const std::string& disk_key);
  void insert_volume(const VolumeRecord& v);
  void set_volume_size(const std::string& volume_id, int64_t size_bytes);  // grown
  // Where the volume's device is now (a node that took it over sees it at its own path).
  void set_volume_device(const std::string& volume_id, const std::string& device_path);
  std::vector<VolumeRecord> list_volumes();

  // Exports, by name.
  std::optional<ExportRecord> find_export(const std::string& name);
  void insert_export(const ExportRecord& e, const std::string& vm_id, int64_t unit, const std::string& disk_key);
  // A new device or size makes the export unverified until mark_export_verified.
  void update_export_device(const std::string& name, const std::string& device_path, int64_t size_bytes);
  void mark_export_verified(const std::string& name);
  std::vector<ExportRecord> list_exports();
  std::optional<std::string> export_for(const std::string& vm_id, int64_t unit);
  int64_t count_exports();

 private:
  db::Database& db_;
};

}  // namespace mk::oma
