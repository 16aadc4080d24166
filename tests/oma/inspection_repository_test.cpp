// InspectionRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h):
// one last inspection per VM, replaced by the next, every field read back as written
// (a guest's long product name too), one row per VM.
#include <gtest/gtest.h>

#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void OneLastInspectionPerVmReplacedByTheNext(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  r.vms.add_vm(vm_record(kVm2), disk_records(1));
  EXPECT_FALSE(r.inspections.find(kVm1));
  InspectionRecord i;
  i.vm_id = kVm1;
  i.job_id = "job-1";
  i.started_by = "after_pass";
  i.os_found = false;
  i.boot_disk = -1;
  i.vsphere_firmware = "efi";
  i.vsphere_secure_boot = true;
  i.reason = "no operating system was found on the disks (data disks, or a disk that is not an OS)";
  i.seconds = 19.5;
  i.inspected_at = 1000;
  r.inspections.put(i);
  auto first = r.inspections.find(kVm1);
  ASSERT_TRUE(first);
  EXPECT_FALSE(first->os_found);
  EXPECT_FALSE(first->convertible);
  EXPECT_EQ(first->boot_disk, -1);
  EXPECT_EQ(first->reason, i.reason);
  EXPECT_EQ(first->vsphere_firmware, "efi");
  EXPECT_TRUE(first->vsphere_secure_boot);

  i.job_id = "job-2";  // the next inspection replaces it
  i.started_by = "api";
  i.os_found = i.convertible = true;
  i.os_family = "linux";
  i.distro = "debian";
  i.version = "12.12";
  i.product_name = "Debian GNU/Linux 12 (bookworm)" + std::string(400, '.');  // over any VARCHAR
  i.osinfo = "debian12";
  i.root_device = "/dev/sdb1";
  i.boot_disk = 1;
  i.boot_disk_key = "2001";
  i.firmware = "uefi";
  i.vsphere_secure_boot = false;
  i.reason = "";
  i.seconds = 21.25;
  i.inspected_at = 2000;
  r.inspections.put(i);
  InspectionRecord other = i;
  other.vm_id = kVm2;
  other.job_id = "job-3";
  other.boot_disk = 0;
  other.boot_disk_key = "2000";
  r.inspections.put(other);

  auto got = r.inspections.find(kVm1);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->job_id, "job-2");
  EXPECT_EQ(got->started_by, "api");
  EXPECT_TRUE(got->os_found);
  EXPECT_TRUE(got->convertible);
  EXPECT_EQ(got->os_family, "linux");
  EXPECT_EQ(got->distro, "debian");
  EXPECT_EQ(got->version, "12.12");
  EXPECT_EQ(got->product_name, i.product_name);
  EXPECT_EQ(got->osinfo, "debian12");
  EXPECT_EQ(got->root_device, "/dev/sdb1");
  EXPECT_EQ(got->boot_disk, 1);
  EXPECT_EQ(got->boot_disk_key, "2001");
  EXPECT_EQ(got->firmware, "uefi");
  EXPECT_EQ(got->vsphere_firmware, "efi");
  EXPECT_FALSE(got->vsphere_secure_boot);
  EXPECT_EQ(got->reason, "");
  EXPECT_EQ(got->seconds, 21.25);
  EXPECT_EQ(got->inspected_at, 2000);
  auto all = r.inspections.all();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all.at(kVm1).job_id, "job-2");
  EXPECT_EQ(all.at(kVm2).boot_disk_key, "2000");
}

}  // namespace

Scenarios inspection_repository_scenarios() {
  return {{"OneLastInspectionPerVmReplacedByTheNext", OneLastInspectionPerVmReplacedByTheNext}};
}

}  // namespace mk::oma::test
