// Preflight against the lab: VMs made with the disks and states a real site has (through
// vcsim's own ReconfigVM, and the shim for what vcsim cannot hold: RDMs, encryption,
// consolidation, orphaned VMs), every finding found at once and naming VM, disk and
// what to do. Also the boot disk from bootOrder or the firmware's controller order,
// property-collector paging, the one-query snapshot listing and task polling back-off.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "vsphere/inventory.h"
#include "vsphere/preflight.h"
#include "vsphere/tasks.h"
#include "vsphere/vm_ops.h"

namespace mk::vsphere {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::set<std::string> codes(const std::vector<Finding>& findings) {
  std::set<std::string> out;
  for (const auto& f : findings) out.insert(f.code);
  return out;
}

// The key of the (last) disk on controller `controller`, -1 when none.
int disk_on(const VmInfo& vm, int controller) {
  int key = -1;
  for (auto& d : vm.disks) {
    if (d.controller_key == controller) key = d.key;
  }
  return key;
}

const Finding* find_code(const std::vector<Finding>& findings, const std::string& code) {
  auto it = std::find_if(findings.begin(), findings.end(), [&](const Finding& f) { return f.code == code; });
  return it == findings.end() ? nullptr : &*it;
}

class VspherePreflight : public ::testing::Test {
 protected:
  void SetUp() override {
    s = Session::connect(test::lab_connect_options(lab));
    vm = describe_vm(*s, find_by_inventory_path(*s, "DC0/vm/DC0_H0_VM0").value());
  }
  VmInfo refresh() { return vm = describe_vm(*s, vm.ref); }

  test::VcsimLab lab;
  std::unique_ptr<Session> s;
  VmInfo vm;
};

TEST_F(VspherePreflight, APlainVmHasNoFinding) {
  EXPECT_TRUE(preflight(vm).empty()) << describe_findings(preflight(vm));
  EXPECT_EQ(vm.connection_state, "connected");
  EXPECT_TRUE(vm.has_config);
}

TEST_F(VspherePreflight, EveryDiskThatASnapshotDoesNotCoverIsFoundAtOnce) {
  int scsi = test::first_disk_controller(vm);
  test::add_lab_disk(*s, vm, scsi, "LocalDS_0", kMiB, "indep", {.disk_mode = "independent_persistent"});
  test::add_lab_disk(*s, refresh(), scsi, "LocalDS_0", kMiB, "nonpers", {.disk_mode = "independent_nonpersistent"});
  test::add_lab_disk(*s, refresh(), scsi, "LocalDS_0", kMiB, "shared", {.sharing = "sharingMultiWriter"});
  test::add_lab_disk(*s, refresh(), scsi, "LocalDS_0", kMiB, "prdm", {.rdm_mode = "physicalMode"});
  test::add_lab_disk(*s, refresh(), scsi, "LocalDS_0", kMiB, "vrdm", {.rdm_mode = "virtualMode"});
  refresh();
  ASSERT_EQ(vm.disks.size(), 6u);

  auto findings = preflight(vm);
  std::map<std::string, std::string> by_file;  // file -> codes
  for (const auto& f : findings) by_file[f.disk_file] += f.code + " ";
  auto file = [&](const std::string& stem) { return "[LocalDS_0] DC0_H0_VM0/" + stem + ".vmdk"; };
  EXPECT_EQ(by_file[file("indep")], "independent-disk ");
  EXPECT_EQ(by_file[file("nonpers")], "independent-disk ");
  EXPECT_EQ(by_file[file("shared")], "shared-disk ");
  EXPECT_EQ(by_file[file("prdm")], "rdm-physical ");
  EXPECT_EQ(by_file[file("vrdm")], "rdm-virtual ");
  EXPECT_EQ(findings.size(), 5u) << describe_findings(findings);
  // Each names the VM, the disk and what to do.
  const Finding* rdm = find_code(findings, "rdm-physical");
  ASSERT_NE(rdm, nullptr);
  EXPECT_EQ(rdm->vm_id, vm.instance_uuid);
  EXPECT_NE(rdm->disk_key, 0);
  std::string text = rdm->text();
  EXPECT_NE(text.find("VM DC0_H0_VM0 disk"), std::string::npos) << text;
  EXPECT_NE(text.find(file("prdm")), std::string::npos) << text;
  EXPECT_NE(text.find("cannot snapshot"), std::string::npos) << text;
}

TEST_F(VspherePreflight, SharedScsiBusIsAFinding) {
  int shared = test::add_lab_controller(*s, vm, "ParaVirtualSCSIController", "physicalSharing");
  test::add_lab_disk(*s, refresh(), shared, "LocalDS_0", kMiB, "quorum");
  auto findings = preflight(refresh());
  ASSERT_EQ(findings.size(), 1u) << describe_findings(findings);
  EXPECT_EQ(findings[0].code, "shared-disk");
  EXPECT_NE(findings[0].problem.find("physicalSharing"), std::string::npos);
}

TEST_F(VspherePreflight, SnapshotsOfItsOwnAreAFindingButOursAreNot) {
  create_snapshot(*s, vm, "before-upgrade", "taken by the VM's owner");
  create_snapshot(*s, vm, "migratekit-20240101T000000Z", "a pass of ours");
  auto findings = preflight(refresh());
  ASSERT_EQ(findings.size(), 1u) << describe_findings(findings);
  EXPECT_EQ(findings[0].code, "existing-snapshots");
  EXPECT_NE(findings[0].problem.find("\"before-upgrade\""), std::string::npos) << findings[0].problem;
  EXPECT_EQ(findings[0].problem.find("migratekit-"), std::string::npos) << findings[0].problem;
  EXPECT_EQ(vm.snapshots.size(), 2u);
}

TEST_F(VspherePreflight, StatesVcsimCannotHoldComeThroughTheShim) {
  lab.override_property(vm.ref.value, "config.keyId",
                        "<val xsi:type=\"CryptoKeyId\"><keyId>k1</keyId><providerId><id>kms</id></providerId></val>");
  lab.override_property(vm.ref.value, "runtime.consolidationNeeded", "<val xsi:type=\"xsd:boolean\">true</val>");
  lab.override_property(vm.ref.value, "capability.changeTrackingSupported",
                        "<val xsi:type=\"xsd:boolean\">false</val>");
  auto findings = preflight(refresh());
  EXPECT_EQ(codes(findings), (std::set<std::string>{"encrypted-vm", "consolidation-needed", "cbt-unsupported"}))
      << describe_findings(findings);
  for (const auto& f : findings) EXPECT_EQ(f.disk_key, 0) << f.text();
}

// A disk encrypted on its own (its backing's keyId) and a disk without a file name, in the
// device list as vCenter answers it; an inaccessible VM says so and is not "no-config".
TEST_F(VspherePreflight, EncryptedDisksDisksWithoutAFileAndInaccessibleVmsAreFindings) {
  auto disk = [](int key, int unit, const std::string& backing) {
    return fmt::format(
        "<VirtualDevice xsi:type=\"VirtualDisk\"><key>{}</key><deviceInfo><label>Hard disk {}</label></deviceInfo>"
        "<backing xsi:type=\"VirtualDiskFlatVer2BackingInfo\">{}<diskMode>persistent</diskMode></backing>"
        "<controllerKey>1000</controllerKey><unitNumber>{}</unitNumber><capacityInKB>1024</capacityInKB>"
        "</VirtualDevice>",
        key, unit + 1, backing, unit);
  };
  lab.override_property(
      vm.ref.value, "config.hardware.device",
      "<val xsi:type=\"ArrayOfVirtualDevice\"><VirtualDevice xsi:type=\"VirtualLsiLogicController\"><key>1000</key>"
      "<busNumber>0</busNumber><sharedBus>noSharing</sharedBus></VirtualDevice>" +
          disk(2000, 0, "<fileName>[LocalDS_0] DC0_H0_VM0/plain.vmdk</fileName>") +
          disk(2001, 1, "<fileName>[LocalDS_0] DC0_H0_VM0/secret.vmdk</fileName><keyId><keyId>k1</keyId>"
                        "<providerId><id>kms</id></providerId></keyId>") +
          disk(2002, 2, "<fileName></fileName>") + "</val>");
  auto findings = preflight(refresh());
  ASSERT_EQ(findings.size(), 2u) << describe_findings(findings);
  EXPECT_EQ(findings[0].code, "encrypted-disk");
  EXPECT_EQ(findings[0].disk_key, 2001);
  EXPECT_EQ(findings[1].code, "no-backing-file");
  EXPECT_EQ(findings[1].disk_key, 2002);
  EXPECT_NE(findings[1].text().find("Hard disk 3"), std::string::npos) << findings[1].text();

  lab.override_property(vm.ref.value, "runtime.connectionState",
                        "<val xsi:type=\"VirtualMachineConnectionState\">inaccessible</val>");
  EXPECT_EQ(codes(preflight(refresh())), (std::set<std::string>{"inaccessible", "encrypted-disk", "no-backing-file"}));
}

TEST_F(VspherePreflight, TemplatesAndOrphanedVmsAreFindings) {
  VmInfo other = describe_vm(*s, find_by_inventory_path(*s, "DC0/vm/DC0_H0_VM1").value());
  power_off(*s, other);  // a template is powered off
  s->invoke("MarkAsTemplate", other.ref.xml("_this"));
  auto t = preflight(describe_vm(*s, other.ref));
  EXPECT_EQ(codes(t), std::set<std::string>{"template"}) << describe_findings(t);

  lab.override_property(vm.ref.value, "runtime.connectionState", "<val xsi:type=\"VirtualMachineConnectionState\">orphaned</val>");
  auto o = preflight(refresh());
  EXPECT_EQ(codes(o), std::set<std::string>{"orphaned"}) << describe_findings(o);
}

TEST_F(VspherePreflight, CbtThatMayNotBeEnabledIsAFinding) {
  PreflightOptions o;
  o.enable_cbt = false;
  EXPECT_EQ(codes(preflight(vm, o)), std::set<std::string>{"cbt-disabled"});
  set_change_tracking(*s, vm, true);
  EXPECT_TRUE(preflight(refresh(), o).empty());
}

TEST_F(VspherePreflight, BootDiskFollowsBootOrderThenTheFirmwaresControllerOrder) {
  int scsi = test::first_disk_controller(vm);
  int scsi_disk = vm.disks[0].key;
  EXPECT_EQ(boot_disk_key(vm), scsi_disk);
  // An NVMe disk beside the SCSI one: the firmware finds NVMe before SCSI.
  int nvme = test::add_lab_controller(*s, vm, "VirtualNVMEController");
  test::add_lab_disk(*s, refresh(), nvme, "LocalDS_0", kMiB, "nvme-boot");
  int nvme_disk = disk_on(refresh(), nvme);
  ASSERT_NE(nvme_disk, -1);
  EXPECT_EQ(boot_disk_key(vm), nvme_disk);
  // A SATA disk comes before both.
  int sata = test::add_lab_controller(*s, vm, "VirtualAHCIController");
  test::add_lab_disk(*s, refresh(), sata, "LocalDS_0", kMiB, "sata-boot");
  int sata_disk = disk_on(refresh(), sata);
  EXPECT_EQ(boot_disk_key(vm), sata_disk);
  // bootOrder, when it names a disk, wins over the controller order.
  test::set_lab_boot_order(*s, vm, {scsi_disk});
  EXPECT_EQ(refresh().boot_order_disks, std::vector<int>{scsi_disk});
  EXPECT_EQ(boot_disk_key(vm), scsi_disk);
  (void)scsi;
}

TEST_F(VspherePreflight, PropertyCollectorAnswersArePagedByMaxObjects) {
  ConnectOptions o = test::lab_connect_options(lab);
  o.page_size = 1;
  auto paged = Session::connect(o);
  auto vms = list_vms(*paged);
  EXPECT_EQ(vms.size(), 4u);  // vcsim's default inventory
  auto stats = lab.shim_stats();
  EXPECT_GE(stats["calls"].value("ContinueRetrievePropertiesEx", 0), 3) << stats.dump();
  bool asked = false;
  for (auto& m : stats["max_objects"]) asked |= m.is_number() && m.get<int>() == 1;
  EXPECT_TRUE(asked) << "RetrievePropertiesEx never set maxObjects: " << stats.dump();
}

TEST_F(VspherePreflight, AllSnapshotsComeInOneQuery) {
  create_snapshot(*s, vm, "migratekit-x", "pass");
  VmInfo other = describe_vm(*s, find_by_inventory_path(*s, "DC0/vm/DC0_H0_VM1").value());
  create_snapshot(*s, other, "owner-snap", "");
  // An orphaned VM without config is skipped, not an error.
  VmInfo third = describe_vm(*s, find_by_inventory_path(*s, "DC0/vm/DC0_C0_RP0_VM0").value());
  lab.override_property(third.ref.value, "config.instanceUuid", std::nullopt);
  auto before = lab.shim_stats()["calls"].value("RetrievePropertiesEx", 0);
  std::vector<std::string> errors;
  auto all = list_all_snapshots(*s, errors);
  EXPECT_TRUE(errors.empty());
  EXPECT_EQ(lab.shim_stats()["calls"].value("RetrievePropertiesEx", 0) - before, 1);
  EXPECT_EQ(all.size(), 3u);
  for (auto& v : all) {
    EXPECT_NE(v.ref, third.ref);
    EXPECT_FALSE(v.instance_uuid.empty());
    if (v.ref == vm.ref) {
      EXPECT_EQ(v.snapshots.size(), 1u);
    }
    if (v.ref == other.ref) {
      ASSERT_EQ(v.snapshots.size(), 1u);
      EXPECT_EQ(v.snapshots[0].name, "owner-snap");
    }
  }
}

TEST(VsphereTasks, PollingBacksOffToTheLongestDelay) {
  TaskWait w;
  w.poll = std::chrono::milliseconds(250);
  w.poll_max = std::chrono::milliseconds(5000);
  std::chrono::milliseconds d = w.poll;
  std::vector<long> seen;
  for (int i = 0; i < 12; ++i) seen.push_back((d = next_poll_delay(d, w)).count());
  EXPECT_EQ(seen.front(), 375);
  EXPECT_EQ(seen.back(), 5000);
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  // An hour-long task costs a few hundred polls, not 14,400.
  long total = 0, polls = 0;
  for (d = w.poll; total < 3600 * 1000; d = next_poll_delay(d, w), ++polls) total += d.count();
  EXPECT_LT(polls, 800);
}

}  // namespace
}  // namespace mk::vsphere
