// The VM built to match the guest (guest_fit.h): the OS type chosen from the simulator's
// listOsTypes, the boot type and mode, the template per OS family or distro; then whole
// cutovers and test failovers of an inspected guest against the simulator, with a fake
// conversion (no qemu here: the real one is label guest) that writes a marker into every
// volume, or fails.
#include "cloudstack/guest_fit.h"

#include <gtest/gtest.h>

#include "cloudstack/test_failover.h"
#include "migrated_vm.h"

namespace mk::cloudstack {
namespace {

namespace seed = test::seed;

GuestFacts linux_guest(const std::string& distro, int major, int minor) {
  GuestFacts g;
  g.os_family = "linux";
  g.distro = distro;
  g.major_version = major;
  g.minor_version = minor;
  return g;
}

class OsTypes : public ::testing::Test {
 protected:
  OsTypeChoice choose(const GuestFacts& g) { return choose_os_type(client.list("listOsTypes", "ostype"), g); }
  test::SimServer sim;
  Client client{sim.endpoint(), test::SimServer::fast_client_options()};
};

TEST_F(OsTypes, TheInspectedDistroAndVersionPickCloudStacksName) {
  OsTypeChoice debian = choose(linux_guest("debian", 12, 0));
  EXPECT_EQ(debian.id, seed::os_debian_12) << debian.description;  // not its 32-bit twin
  EXPECT_EQ(debian.how, "exact");
  EXPECT_EQ(choose(linux_guest("ubuntu", 22, 4)).id, seed::os_ubuntu_22_04);  // "22.04"
  EXPECT_EQ(choose(linux_guest("rhel", 9, 2)).id, seed::os_rhel_9);           // "9": no minor named
  OsTypeChoice rhel8 = choose(linux_guest("rhel", 8, 6));                      // only "8.0" exists
  EXPECT_EQ(rhel8.id, seed::os_rhel_8);
  EXPECT_EQ(rhel8.how, "same major version");
}

// A Linux guest CloudStack has no name for gets "Other PV (64-bit)", never "Other Linux":
// KVM hosts give "Other Linux" IDE disks, and the converted guest expects virtio.
TEST_F(OsTypes, AnUnknownLinuxGetsOtherPvAndAnUnknownWindowsKeepsTheTemplates) {
  OsTypeChoice trixie = choose(linux_guest("debian", 13, 0));
  EXPECT_EQ(trixie.id, seed::os_other_pv);
  EXPECT_NE(trixie.how.find("generic"), std::string::npos) << trixie.how;
  EXPECT_EQ(choose(linux_guest("archlinux", 0, 0)).id, seed::os_other_pv);

  GuestFacts w;
  w.os_family = "windows";
  w.distro = "windows";
  w.major_version = 10;
  w.product_name = "Windows Server 2022 Standard";
  EXPECT_EQ(choose(w).id, seed::os_windows_2022);
  w.product_name = "Windows Server 2016 Standard";
  OsTypeChoice none = choose(w);
  EXPECT_EQ(none.id, "");
  EXPECT_NE(none.how.find("template's OS type stays"), std::string::npos) << none.how;
  EXPECT_EQ(choose(GuestFacts{}).id, "");  // not inspected
}

TEST(GuestFit, BootTypeFromVsphereFirstThenTheDisks) {
  GuestFacts uefi_disks = linux_guest("debian", 12, 0);
  uefi_disks.firmware = "uefi";
  GuestFacts bios_disks = uefi_disks;
  bios_disks.firmware = "bios";

  BootChoice c = choose_boot("efi", true, uefi_disks);
  EXPECT_EQ(c.boot_type, "UEFI");
  EXPECT_EQ(c.boot_mode, "SECURE");
  c = choose_boot("", false, uefi_disks);  // vSphere's not known: the EFI system partition decides
  EXPECT_EQ(c.boot_type, "UEFI");
  EXPECT_EQ(c.boot_mode, "LEGACY");
  c = choose_boot("", true, bios_disks);   // secure boot needs UEFI
  EXPECT_EQ(c.boot_type, "BIOS");
  EXPECT_EQ(c.boot_mode, "LEGACY");
  c = choose_boot("bios", false, uefi_disks);  // the source booted BIOS: that wins, the step says why
  EXPECT_EQ(c.boot_type, "BIOS");
  EXPECT_NE(c.why.find("vSphere's setting wins"), std::string::npos) << c.why;
  EXPECT_EQ(choose_boot("", false, GuestFacts{}).boot_type, "");  // nothing known: CloudStack's default
}

TEST(GuestFit, TemplateByDistroThenFamilyThenTheGlobalOne) {
  std::map<std::string, std::string> t{{"debian", "T-DEB"}, {"linux", "T-LINUX"}, {"windows", "T-WIN"}};
  EXPECT_EQ(choose_template(t, linux_guest("debian", 12, 0), "T-ALL"), "T-DEB");
  EXPECT_EQ(choose_template(t, linux_guest("rhel", 9, 0), "T-ALL"), "T-LINUX");
  GuestFacts bsd;
  bsd.os_family = "freebsd";
  bsd.distro = "freebsd";
  EXPECT_EQ(choose_template(t, bsd, "T-ALL"), "T-ALL");
  EXPECT_EQ(choose_template(t, GuestFacts{}, "T-ALL"), "T-ALL");  // not inspected
  EXPECT_TRUE(is_os_template_key("windows"));
  EXPECT_FALSE(is_os_template_key("debain"));
}

// A guest conversion that writes a marker into every device it is given (in unit order),
// or fails without writing.
class FakeConversion : public GuestConversion {
 public:
  explicit FakeConversion(test::Events& events) : events_(events) {}
  std::string fail_with;
  std::vector<std::string> devices;
  std::string convert(const SourceVm& vm, const std::vector<std::string>& given) override {
    events_.push_back("convert " + vm.vm_uuid);
    devices = given;
    if (!fail_with.empty()) throw Error(fail_with);
    for (std::size_t i = 0; i < given.size(); ++i) test::write_at(given[i], 8192, "CONVERTED-" + std::to_string(i));
    return "converted (fake)";
  }

 private:
  test::Events& events_;
};

class MatchedCutover : public test::MigratedVm {
 protected:
  void SetUp() override {
    test::MigratedVm::SetUp();
    // Inspection found the root filesystem on the disk of unit 1 ("2001"), UEFI; vSphere
    // had secure boot on.
    vm.guest = linux_guest("debian", 12, 0);
    vm.guest.boot_disk = 1;
    vm.guest.firmware = "uefi";
    vm.firmware = "efi";
    vm.secure_boot = true;
  }
  TargetSettings debian_target() {
    TargetSettings t = target();
    t.os_templates = {{"debian", seed::debian_template}, {"windows", seed::windows_template}};
    return t;
  }
  std::string volume_file(const SourceDisk& d) { return sim.dir() + "/state/volumes/" + d.volume_id + ".img"; }
  const SourceDisk& disk(const std::string& key) {
    for (const auto& d : vm.disks) {
      if (d.disk.disk_key == key) return d;
    }
    throw Error("no disk " + key);
  }
  int calls(const std::string& command) {
    int n = 0;
    for (const auto& c : sim.state()["calls"]) n += c["command"] == command;
    return n;
  }
  VmBuilder fitted{client, volumes, debian_target()};
  FakeConversion conversion{events};
};

TEST_F(MatchedCutover, TheVmMatchesTheInspectedGuest) {
  StepLog steps;
  std::string id = Cutover(fitted, power, final_pass, exports, fast()).run(vm, steps);
  Json created = vm_in_sim(id);
  EXPECT_EQ(created["boottype"], "UEFI");
  EXPECT_EQ(created["bootmode"], "SECURE");
  EXPECT_EQ(created["guestosid"], seed::os_debian_12);
  EXPECT_EQ(created["templateid"], seed::debian_template);
  // The inspected boot disk (unit 1) is the root; the others keep unit order.
  EXPECT_EQ(volumes.get(disk("2001").volume_id).device_id, 0);
  EXPECT_EQ(volumes.get(disk("2001").volume_id).type, "ROOT");
  EXPECT_GT(volumes.get(disk("2000").volume_id).device_id, 0);
  EXPECT_LT(volumes.get(disk("2000").volume_id).device_id, volumes.get(disk("2002").volume_id).device_id);
  const Step* deploy = steps.find("deploy-vm");
  ASSERT_NE(deploy, nullptr);
  EXPECT_NE(deploy->detail.find("UEFI SECURE"), std::string::npos) << deploy->detail;
  EXPECT_NE(deploy->detail.find("Debian GNU/Linux 12 (64-bit)"), std::string::npos) << deploy->detail;
}

// Without inspection nothing changes: the global template, CloudStack's default boot,
// the template's OS type, the OS disk as root.
TEST_F(MatchedCutover, AGuestNotInspectedIsBuiltAsBefore) {
  vm.guest = GuestFacts{};
  vm.firmware.clear();
  StepLog steps;
  std::string id = Cutover(fitted, power, final_pass, exports, fast()).run(vm, steps);
  Json created = vm_in_sim(id);
  EXPECT_EQ(created["boottype"], "BIOS");
  EXPECT_EQ(created["templateid"], seed::ready_template);
  EXPECT_EQ(created["guestosid"], seed::os_other_linux);
  EXPECT_EQ(volumes.get(disk("2000").volume_id).device_id, 0);
  EXPECT_EQ(calls("updateVirtualMachine"), 0);
  EXPECT_EQ(calls("listOsTypes"), 0);
  for (const auto& c : sim.state()["calls"]) {
    if (c["command"] == "deployVirtualMachine") EXPECT_FALSE(c["params"].contains("boottype"));
  }
}

// The conversion runs on the volumes while they are on the OMA's VM, after the final
// pass and before they leave it; the VM boots from converted volumes.
TEST_F(MatchedCutover, TheGuestIsConvertedAfterTheFinalPassOnTheOmasVm) {
  StepLog steps;
  Cutover(fitted, power, final_pass, exports, fast(), &conversion).run(vm, steps);
  std::vector<std::string> names;
  for (const auto& s : steps.steps()) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"final-pass", "guest-conversion", "detach-from-oma", "deploy-vm",
                                             "replace-root", "attach-data-disks", "start-vm"}));
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events[1], "final_pass " + vm.vm_uuid);
  EXPECT_EQ(events[2], "convert " + vm.vm_uuid);
  EXPECT_EQ(events[3].rfind("remove_export", 0), 0u) << events[3];
  // Unit order (as guest tools number the disks), each the volume's device on the OMA.
  ASSERT_EQ(conversion.devices.size(), 3u);
  const char* by_unit[] = {"2000", "2001", "2002"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(conversion.devices[i], sim.by_id_dir() + "/" + CloudStackVolumes::device_link_name(disk(by_unit[i]).volume_id));
    EXPECT_EQ(test::read_at(volume_file(disk(by_unit[i])), 8192, 11), "CONVERTED-" + std::to_string(i));
  }
}

TEST_F(MatchedCutover, AFailedConversionRollsBackWithTheVolumesAsTheFinalPassLeftThem) {
  conversion.fail_with = "virt-v2v-in-place: no bootloader detected";
  StepLog steps;
  try {
    Cutover(fitted, power, final_pass, exports, fast(), &conversion).run(vm, steps);
    FAIL() << "the cutover succeeded despite the failed conversion";
  } catch (const CutoverError& e) {
    EXPECT_EQ(e.step(), "guest-conversion");
    EXPECT_NE(std::string(e.what()).find("no bootloader detected"), std::string::npos) << e.what();
  }
  EXPECT_EQ(steps.find("rollback")->status, StepStatus::Done);
  expect_as_before();  // source on again, volumes on the OMA and exported, data intact
  for (const auto& d : vm.disks) EXPECT_NE(test::read_at(volume_file(d), 8192, 10), "CONVERTED-");
}

// The record says whether the volumes may differ from the final pass: after a conversion
// (and a later failure), not after a conversion that failed (it writes nothing).
TEST_F(MatchedCutover, TheRecordSaysWhenTheVolumesNoLongerHoldTheFinalPass) {
  sim.fail({{"command", "deployVirtualMachine"}, {"how", "job"}});
  StepLog steps;
  CutoverRecord record;
  EXPECT_THROW(Cutover(fitted, power, final_pass, exports, fast(), &conversion).run(vm, steps, record), CutoverError);
  EXPECT_EQ(steps.find("guest-conversion")->status, StepStatus::Done);
  EXPECT_TRUE(record.volumes_changed);

  sim.clear_failures();
  conversion.fail_with = "virt-v2v-in-place: no bootloader detected";
  StepLog again;
  EXPECT_THROW(Cutover(fitted, power, final_pass, exports, fast(), &conversion).run(vm, again, record), CutoverError);
  EXPECT_FALSE(record.volumes_changed);
}

// Test failover: converted after the snapshots, so that the cleanup's revert undoes the
// conversion and replication continues from what it had copied.
TEST_F(MatchedCutover, TestFailoverConvertsAfterTheSnapshotsAndTheCleanupUndoesIt) {
  TestFailover failover(client, fitted, exports, seed::test_network, &conversion);
  StepLog steps;
  TestFailoverRecord record = failover.start(vm, steps);
  std::vector<std::string> names;
  for (const auto& s : steps.steps()) names.push_back(s.name);
  EXPECT_EQ(names, (std::vector<std::string>{"detach-from-oma", "snapshot-volumes", "guest-conversion", "deploy-vm",
                                             "replace-root", "attach-data-disks", "start-vm"}));
  EXPECT_TRUE(record.conversion_began);
  for (const auto& d : vm.disks) EXPECT_EQ(test::read_at(volume_file(d), 8192, 10), "CONVERTED-");
  Json test_vm = vm_in_sim(record.vm_id);
  EXPECT_EQ(test_vm["boottype"], "UEFI");
  EXPECT_EQ(test_vm["guestosid"], seed::os_debian_12);
  EXPECT_EQ(volumes.get(disk("2001").volume_id).device_id, 0);
  EXPECT_TRUE(exports.current.empty()) << "the conversion's attach to the OMA exported a volume";

  StepLog cleanup;
  failover.cleanup(vm, record, cleanup);
  expect_as_before();
  for (const auto& d : vm.disks) EXPECT_NE(test::read_at(volume_file(d), 8192, 10), "CONVERTED-");
}

TEST_F(MatchedCutover, TestFailoverWithAFailedConversionRollsBack) {
  conversion.fail_with = "virt-v2v-in-place: killed";
  TestFailover failover(client, fitted, exports, seed::test_network, &conversion);
  StepLog steps;
  TestFailoverRecord record;
  try {
    failover.start(vm, steps, record);
    FAIL() << "the test failover started despite the failed conversion";
  } catch (const CutoverError& e) {
    EXPECT_EQ(e.step(), "guest-conversion");
  }
  expect_as_before();
  EXPECT_EQ(sim.state()["snapshots"].size(), 0u);
}

}  // namespace
}  // namespace mk::cloudstack
