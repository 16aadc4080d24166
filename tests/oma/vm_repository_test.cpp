// VmRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h): VMs
// with their disks, NICs, the VM's VMA and failover records.
#include <gtest/gtest.h>

#include "oma/errors.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void VmWithDisksRoundTrips(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(2));
  VmRecord v = r.vms.get_vm(kVm1);
  EXPECT_EQ(v.name, vm_record(kVm1).name);
  EXPECT_EQ(v.memory_mb, 4096);
  EXPECT_EQ(v.status, VmStatus::Discovered);
  EXPECT_GT(v.created_at, 0);
  EXPECT_FALSE(v.current_job_id);
  auto d = r.vms.list_disks(kVm1);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].vm_id, kVm1);
  EXPECT_EQ(d[1].disk_key, "2001");
  EXPECT_EQ(d[1].capacity_bytes, 2 * 1048576);
  EXPECT_FALSE(d[1].change_id);
  EXPECT_THROW(r.vms.add_vm(vm_record(kVm1), disk_records(1)), Conflict);
  EXPECT_THROW(r.vms.get_vm(kVm2), NotFound);

  r.vms.set_vm_status(kVm1, VmStatus::TestFailoverCleanupInterrupted);  // the longest name fits
  EXPECT_EQ(r.vms.get_vm(kVm1).status, VmStatus::TestFailoverCleanupInterrupted);
  ASSERT_EQ(r.vms.list_vms().size(), 1u);
}

void DuplicateDiskUnitRejectedAndNothingStored(db::Database&, Repositories& r) {
  auto d = disk_records(2);
  d[1].unit = 0;
  EXPECT_THROW(r.vms.add_vm(vm_record(kVm1), d), Conflict);
  EXPECT_FALSE(r.vms.find_vm(kVm1));  // the transaction rolled back
}

void NicsAreReplacedWholeOrNotAtAll(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.vms.set_vm_nics(kVm1,
                    {{kVm1, "4001", "00:50:56:aa:bb:02", "Backup"}, {kVm1, "4000", "00:50:56:aa:bb:01", "VM Network"}});
  auto nics = r.vms.list_nics(kVm1);
  ASSERT_EQ(nics.size(), 2u);
  EXPECT_EQ(nics[0].nic_key, "4000");
  EXPECT_EQ(nics[1].network, "Backup");
  EXPECT_THROW(r.vms.set_vm_nics(kVm1, {{kVm1, "4000", "a", "x"}, {kVm1, "4000", "b", "y"}}), Conflict);
  EXPECT_EQ(r.vms.list_nics(kVm1).size(), 2u);  // the failed replacement rolled back
  EXPECT_THROW(r.vms.set_vm_nics(kVm2, {}), NotFound);
}

void FailoversOnePerVmAndKind(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  r.vms.put_failover({kVm1, FailoverKind::TestFailover, "job-1", "vm-in-cloudstack", R"({"snapshots":{}})", 0});
  auto f = r.vms.find_failover(kVm1, FailoverKind::TestFailover);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->target_vm_id, "vm-in-cloudstack");
  EXPECT_GT(f->created_at, 0);
  r.vms.put_failover({kVm1, FailoverKind::TestFailover, "job-2", "vm-2", "{}", 7});  // replaces
  EXPECT_EQ(r.vms.find_failover(kVm1, FailoverKind::TestFailover)->job_id, "job-2");
  EXPECT_FALSE(r.vms.find_failover(kVm1, FailoverKind::Cutover));
  r.vms.delete_failover(kVm1, FailoverKind::TestFailover);
  EXPECT_FALSE(r.vms.find_failover(kVm1, FailoverKind::TestFailover));
}

void AVmRecordsItsVma(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  EXPECT_FALSE(r.vms.vm_vma(kVm1));
  r.vms.set_vm_vma(kVm1, std::string("vma-b"));
  EXPECT_EQ(r.vms.vm_vma(kVm1), "vma-b");
  EXPECT_EQ(r.vms.get_vm(kVm1).vma_id, "vma-b");
  EXPECT_THROW(r.vms.vm_vma(kVm2), NotFound);
  EXPECT_THROW(r.vms.set_vm_vma(kVm2, std::nullopt), NotFound);
}

// A status this OMA does not know (a newer OMA wrote it, or a hand edit) is an error
// naming the table, the row and the value, never a default.
void AnUnknownStatusIsAnErrorNamingTableRowAndValue(db::Database& database, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  database.exec("UPDATE vm_contexts SET status = 'hibernating' WHERE vm_id = ?", {kVm1});
  try {
    r.vms.get_vm(kVm1);
    FAIL() << "an unknown VM status was read";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("vm_contexts"), std::string::npos) << m;
    EXPECT_NE(m.find("vm_id=" + kVm1), std::string::npos) << m;
    EXPECT_NE(m.find("column status"), std::string::npos) << m;
    EXPECT_NE(m.find("'hibernating' is not a VM status"), std::string::npos) << m;
  }
}

}  // namespace

Scenarios vm_repository_scenarios() {
  return {{"VmWithDisksRoundTrips", VmWithDisksRoundTrips},
          {"DuplicateDiskUnitRejectedAndNothingStored", DuplicateDiskUnitRejectedAndNothingStored},
          {"NicsAreReplacedWholeOrNotAtAll", NicsAreReplacedWholeOrNotAtAll},
          {"FailoversOnePerVmAndKind", FailoversOnePerVmAndKind},
          {"AVmRecordsItsVma", AVmRecordsItsVma},
          {"AnUnknownStatusIsAnErrorNamingTableRowAndValue", AnUnknownStatusIsAnErrorNamingTableRowAndValue}};
}

}  // namespace mk::oma::test
