// StorageRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h):
// one volume per disk, one export per volume and per (VM, unit), each linked to its disk.
#include <gtest/gtest.h>

#include "oma/errors.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void VolumeAndExportIdentityIsUnique(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  VolumeRecord v{"vol-1", kVm1, "2000", "local", "/data/vol-1.img", VolumeStatus::Ready, 1048576, now_ms()};
  r.storage.insert_volume(v);
  EXPECT_EQ(r.storage.find_volume(kVm1, "2000")->volume_id, "vol-1");
  EXPECT_EQ(r.vms.list_disks(kVm1)[0].volume_id.value_or(""), "vol-1");
  VolumeRecord again = v;
  again.volume_id = "vol-2";
  EXPECT_THROW(r.storage.insert_volume(again), Conflict);  // one volume per (VM, disk key)
  VolumeRecord no_disk = v;
  no_disk.volume_id = "vol-3";
  no_disk.disk_key = "2999";
  EXPECT_THROW(r.storage.insert_volume(no_disk), NotFound);
  EXPECT_EQ(r.storage.list_volumes().size(), 1u);  // neither stored anything

  ExportRecord e{"migration-vm-" + kVm1 + "-disk0", "vol-1", "/data/vol-1.img", "nbdkit", 1048576, now_ms(), {}};
  r.storage.insert_export(e, kVm1, 0, "2000");
  EXPECT_EQ(r.storage.export_for(kVm1, 0).value_or(""), e.export_name);
  ExportRecord same_volume = e;
  same_volume.export_name = "migration-vm-" + kVm1 + "-disk1";
  EXPECT_THROW(r.storage.insert_export(same_volume, kVm1, 1, "2001"), Conflict);  // two disks, one volume: refused
  EXPECT_FALSE(r.storage.export_for(kVm1, 1));
  EXPECT_EQ(r.vms.list_disks(kVm1)[0].export_name.value_or(""), e.export_name);
  EXPECT_FALSE(r.vms.list_disks(kVm1)[1].export_name);
  EXPECT_EQ(r.storage.count_exports(), 1);
}

void AMovedDeviceMakesTheExportUnverified(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.storage.insert_volume({"vol-1", kVm1, "2000", "cloudstack", "/dev/vdb", VolumeStatus::Ready, 1048576, now_ms()});
  std::string name = "migration-vm-" + kVm1 + "-disk0";
  r.storage.insert_export({name, "vol-1", "/dev/vdb", "nbdkit", 1048576, now_ms(), {}}, kVm1, 0, "2000");
  r.storage.mark_export_verified(name);
  EXPECT_TRUE(r.storage.find_export(name)->verified_at);
  r.storage.update_export_device(name, "/dev/vdc", 2097152);
  ExportRecord e = *r.storage.find_export(name);
  EXPECT_EQ(e.device_path, "/dev/vdc");
  EXPECT_EQ(e.size_bytes, 2097152);
  EXPECT_FALSE(e.verified_at);
  ASSERT_EQ(r.storage.list_exports().size(), 1u);
}

}  // namespace

Scenarios storage_repository_scenarios() {
  return {{"VolumeAndExportIdentityIsUnique", VolumeAndExportIdentityIsUnique},
          {"AMovedDeviceMakesTheExportUnverified", AMovedDeviceMakesTheExportUnverified}};
}

}  // namespace mk::oma::test
