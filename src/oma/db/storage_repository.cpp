#include "oma/db/storage_repository.h"

#include <fmt/format.h>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;

const EnumTable<VolumeStatus>& enum_table(VolumeStatus) {
  static const EnumTable<VolumeStatus> t{"volume status", {{VolumeStatus::Ready, "ready"}}};
  return t;
}

namespace {

const Table<VolumeRecord> kVolumes{"volumes", {column("volume_id", &VolumeRecord::volume_id),
    column("vm_id", &VolumeRecord::vm_id), column("disk_key", &VolumeRecord::disk_key),
    column("backend", &VolumeRecord::backend), column("size_bytes", &VolumeRecord::size_bytes),
    column("device_path", &VolumeRecord::device_path), column("status", &VolumeRecord::status),
    column("created_at", &VolumeRecord::created_at)}, 1};

const Table<ExportRecord> kExports{"nbd_exports", {column("export_name", &ExportRecord::export_name),
    column("volume_id", &ExportRecord::volume_id), column("device_path", &ExportRecord::device_path),
    column("backend", &ExportRecord::backend), column("size_bytes", &ExportRecord::size_bytes),
    column("created_at", &ExportRecord::created_at), column("verified_at", &ExportRecord::verified_at)}, 1};

// Links a disk to its volume or export (vm_disks.<link>); NotFound for an unknown disk.
// `what`: "attach volume" or "map export", for the message.
void link_disk(db::Database& db, const char* link, const std::string& value, const std::string& vm_id,
               const std::string& disk_key, const char* what) {
  if (db.exec(fmt::format("UPDATE vm_disks SET {} = ?, updated_at = ? WHERE vm_id = ? AND disk_key = ?", link),
              {value, now_ms(), vm_id, disk_key}) != 1) {
    throw NotFound(fmt::format("VM {} has no disk {}: cannot {} {}", vm_id, disk_key, what, value));
  }
}

}  // namespace

// --- Volumes -----------------------------------------------------------------------------

std::optional<VolumeRecord> StorageRepository::find_volume(const std::string& vm_id, const std::string& disk_key) {
  return kVolumes.query_one(db_, "WHERE vm_id = ? AND disk_key = ?", {vm_id, disk_key});
}

void StorageRepository::insert_volume(const VolumeRecord& v) {
  try {
    db_.transaction([&] {
      kVolumes.insert(db_, v);
      link_disk(db_, "volume_id", v.volume_id, v.vm_id, v.disk_key, "attach volume");
    });
  } catch (const db::ConstraintError&) {
    throw Conflict(fmt::format("VM {} disk {} already has a volume; a disk never gets a second one", v.vm_id,
                               v.disk_key));
  }
}

std::vector<VolumeRecord> StorageRepository::list_volumes() { return kVolumes.query(db_, "ORDER BY vm_id, disk_key"); }

// --- Exports -----------------------------------------------------------------------------

std::optional<ExportRecord> StorageRepository::find_export(const std::string& name) {
  return kExports.query_one(db_, "WHERE export_name = ?", {name});
}

void StorageRepository::insert_export(const ExportRecord& e, const std::string& vm_id, int64_t unit,
                                      const std::string& disk_key) {
  try {
    db_.transaction([&] {
      kExports.insert(db_, e);
      db_.exec("INSERT INTO vm_export_mappings (vm_id, unit, export_name) VALUES (?,?,?)",
               {vm_id, unit, e.export_name});
      link_disk(db_, "export_name", e.export_name, vm_id, disk_key, "map export");
    });
  } catch (const db::ConstraintError&) {
    throw Conflict(fmt::format("export {} (VM {} unit {}, volume {}) collides with an existing export: an export "
                               "serves exactly one volume of one disk",
                               e.export_name, vm_id, unit, e.volume_id));
  }
}

void StorageRepository::set_volume_size(const std::string& volume_id, int64_t size_bytes) {
  db_.exec("UPDATE volumes SET size_bytes = ? WHERE volume_id = ?", {size_bytes, volume_id});
}

void StorageRepository::set_volume_device(const std::string& volume_id, const std::string& device_path) {
  db_.exec("UPDATE volumes SET device_path = ? WHERE volume_id = ?", {device_path, volume_id});
}

void StorageRepository::update_export_device(const std::string& name, const std::string& device_path,
                                             int64_t size_bytes) {
  db_.exec("UPDATE nbd_exports SET device_path = ?, size_bytes = ?, verified_at = NULL WHERE export_name = ?",
           {device_path, size_bytes, name});
}

void StorageRepository::mark_export_verified(const std::string& name) {
  db_.exec("UPDATE nbd_exports SET verified_at = ? WHERE export_name = ?", {now_ms(), name});
}

std::vector<ExportRecord> StorageRepository::list_exports() { return kExports.query(db_, "ORDER BY export_name"); }

std::optional<std::string> StorageRepository::export_for(const std::string& vm_id, int64_t unit) {
  auto rows = db_.query("SELECT export_name FROM vm_export_mappings WHERE vm_id = ? AND unit = ?", {vm_id, unit});
  if (rows.empty()) return std::nullopt;
  return rows[0].str(0);
}

int64_t StorageRepository::count_exports() { return db_.query("SELECT COUNT(*) FROM nbd_exports")[0].i64(0); }

}  // namespace mk::oma
