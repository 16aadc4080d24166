// The vSphere SOAP client against a real vcsim (through the CBT shim, which passes these
// calls through): login, TLS pinning, inventory, lookups, snapshots, CBT, power, tasks.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"
#include "vsphere/vm_ops.h"

namespace mk::vsphere {
namespace {

const VmInfo& by_name(const std::vector<VmInfo>& vms, const std::string& name) {
  auto it = std::find_if(vms.begin(), vms.end(), [&](const VmInfo& v) { return v.name == name; });
  if (it == vms.end()) throw Error("no VM " + name);
  return *it;
}

class VsphereClient : public ::testing::Test {
 protected:
  test::VcsimLab lab;
};

TEST_F(VsphereClient, WrongPasswordIsRefusedWithAdvice) {
  ConnectOptions o = test::lab_connect_options(lab);
  o.password_file = lab.wrong_password_file();
  try {
    Session::connect(o);
    FAIL() << "login with a wrong password succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("wrong user name or password"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("not-"), std::string::npos) << "the password leaked: " << e.what();
  }
}

TEST_F(VsphereClient, LoginWithPinnedThumbprintAndLogout) {
  auto s = Session::connect(test::lab_connect_options(lab));
  EXPECT_EQ(s->service().api_type, "VirtualCenter");
  EXPECT_EQ(s->thumbprint(), lab.thumbprint());
  EXPECT_EQ(s->logins(), 1u);
  s->logout();
  // After logout the session is gone on the server: a raw call is refused.
  EXPECT_THROW(s->client().call("CurrentTime", "<_this type=\"ServiceInstance\">ServiceInstance</_this>"), SoapFault);
}

TEST_F(VsphereClient, WrongPinFailsBeforeSendingAnything) {
  ConnectOptions o = test::lab_connect_options(lab);
  o.tls.thumbprint = "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33";
  try {
    Session::connect(o);
    FAIL() << "a wrong pin was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not match the pinned"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(lab.thumbprint()), std::string::npos) << e.what();
  }
}

TEST_F(VsphereClient, CaVerificationWithTheLabCertificateAndWithout) {
  ConnectOptions o = test::lab_connect_options(lab);
  o.tls.mode = TlsPolicy::Mode::VerifyCa;
  o.tls.ca_file = lab.ca_file();
  EXPECT_NO_THROW(Session::connect(o));
  o.tls.ca_file = "";  // the system CAs do not know the lab's self-signed certificate
  EXPECT_THROW(Session::connect(o), Error);
  EXPECT_EQ(fetch_thumbprint(lab.url()), lab.thumbprint());
}

TEST_F(VsphereClient, ExpiredSessionLogsInAgainTransparently) {
  auto s = Session::connect(test::lab_connect_options(lab));
  s->client().call("Logout", s->service().session_manager.xml("_this"));
  auto vms = list_vms(*s);  // NotAuthenticated, re-login, retry
  EXPECT_EQ(vms.size(), 4u);
  EXPECT_EQ(s->logins(), 2u);
}

TEST_F(VsphereClient, OneSessionServesSeveralThreads) {
  auto s = Session::connect(test::lab_connect_options(lab));
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 3; ++i) {
        if (list_vms(*s).size() == 4u) ++ok;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 12);
}

TEST_F(VsphereClient, DiscoversTheDefaultInventory) {
  auto s = Session::connect(test::lab_connect_options(lab));
  auto vms = list_vms(*s);
  ASSERT_EQ(vms.size(), 4u);
  const VmInfo& vm = by_name(vms, "DC0_H0_VM0");
  EXPECT_EQ(vm.ref.type, "VirtualMachine");
  EXPECT_EQ(vm.power_state, "poweredOn");
  EXPECT_FALSE(vm.bios_uuid.empty());
  EXPECT_FALSE(vm.instance_uuid.empty());
  EXPECT_GT(vm.cpus, 0);
  EXPECT_GT(vm.memory_mb, 0);
  EXPECT_FALSE(vm.guest_id.empty());
  ASSERT_EQ(vm.disks.size(), 1u);
  const DiskInfo& d = vm.disks[0];
  EXPECT_EQ(d.capacity_bytes, 1024u * 1024u);
  EXPECT_EQ(d.datastore, "LocalDS_0");
  EXPECT_EQ(d.file_name, "[LocalDS_0] DC0_H0_VM0/disk1.vmdk");
  EXPECT_FALSE(d.controller.empty());
  EXPECT_GE(d.unit_number, 0);
  EXPECT_TRUE(d.change_id.empty());  // CBT is off
  ASSERT_FALSE(vm.nics.empty());
  EXPECT_EQ(vm.nics[0].mac.size(), 17u);
  EXPECT_EQ(vm.nics[0].network, "DC0_DVPG0");  // the port group's name, not its key

  // Each VM is found again by its UUIDs and its inventory path.
  for (auto& v : vms) {
    EXPECT_EQ(find_vm_by_bios_uuid(*s, v.bios_uuid).value_or(Moref{}).value, v.ref.value) << v.name;
    EXPECT_EQ(find_vm_by_instance_uuid(*s, v.instance_uuid).value_or(Moref{}).value, v.ref.value) << v.name;
  }
  EXPECT_EQ(find_by_inventory_path(*s, "DC0/vm/DC0_H0_VM0").value_or(Moref{}).value, vm.ref.value);
  EXPECT_FALSE(find_vm_by_bios_uuid(*s, "00000000-0000-0000-0000-000000000000").has_value());
  EXPECT_FALSE(find_by_inventory_path(*s, "DC0/vm/no-such-vm").has_value());
  EXPECT_EQ(describe_vm(*s, vm.ref).name, "DC0_H0_VM0");
}

TEST_F(VsphereClient, SnapshotCreateListRemove) {
  auto s = Session::connect(test::lab_connect_options(lab));
  VmInfo vm = by_name(list_vms(*s), "DC0_H0_VM1");
  EXPECT_TRUE(list_snapshots(*s, vm.ref).empty());
  Moref a = create_snapshot(*s, vm, "mk-a", "first");
  Moref b = create_snapshot(*s, vm, "mk-b", "second <&> \"quoted\"");
  auto snaps = list_snapshots(*s, vm.ref);
  ASSERT_EQ(snaps.size(), 2u);
  EXPECT_EQ(snaps[0].name, "mk-a");
  EXPECT_EQ(snaps[0].ref.value, a.value);
  EXPECT_EQ(snaps[1].name, "mk-b");
  EXPECT_EQ(snaps[1].description, "second <&> \"quoted\"");
  EXPECT_EQ(snapshot_disks(*s, b).size(), 1u);
  remove_snapshot(*s, vm, b);
  snaps = list_snapshots(*s, vm.ref);
  ASSERT_EQ(snaps.size(), 1u);
  EXPECT_EQ(snaps[0].name, "mk-a");
  remove_snapshot(*s, vm, a);
  EXPECT_TRUE(list_snapshots(*s, vm.ref).empty());
}

TEST_F(VsphereClient, EnableAndDisableChangeTracking) {
  auto s = Session::connect(test::lab_connect_options(lab));
  VmInfo vm = by_name(list_vms(*s), "DC0_C0_RP0_VM0");
  EXPECT_FALSE(vm.cbt_enabled);
  set_change_tracking(*s, vm, true);
  EXPECT_TRUE(describe_vm(*s, vm.ref).cbt_enabled);
  set_change_tracking(*s, vm, false);
  EXPECT_FALSE(describe_vm(*s, vm.ref).cbt_enabled);
}

TEST_F(VsphereClient, PowerOperationsAndAFailingTasksMessage) {
  auto s = Session::connect(test::lab_connect_options(lab));
  VmInfo vm = by_name(list_vms(*s), "DC0_C0_RP0_VM1");
  ASSERT_EQ(vm.power_state, "poweredOn");
  try {
    power_on(*s, vm);  // already on: the task fails with its own fault
    FAIL() << "powering on a running VM succeeded";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("InvalidPowerState"), std::string::npos) << m;
    EXPECT_NE(m.find("DC0_C0_RP0_VM1"), std::string::npos) << m;
  }
  EXPECT_TRUE(shutdown_guest(*s, vm, std::chrono::seconds(30)));
  EXPECT_EQ(power_state(*s, vm.ref), "poweredOff");
  power_on(*s, vm);
  EXPECT_EQ(power_state(*s, vm.ref), "poweredOn");
  power_off(*s, vm);
  EXPECT_EQ(power_state(*s, vm.ref), "poweredOff");
  EXPECT_TRUE(shutdown_guest(*s, vm, std::chrono::seconds(30)));  // already off: nothing to do
}

}  // namespace
}  // namespace mk::vsphere
