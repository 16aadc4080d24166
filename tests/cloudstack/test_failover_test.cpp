// Test failover against the simulator: the test VM boots from the volumes while the
// source keeps running; cleanup throws away what the test VM wrote and gives the
// volumes back to the OMA exactly as replication left them.
#include "cloudstack/test_failover.h"

#include <gtest/gtest.h>

#include "cloudstack/names.h"
#include "migrated_vm.h"

namespace mk::cloudstack {
namespace {

namespace seed = test::seed;

class TestFailoverFixture : public test::MigratedVm {
 protected:
  std::string volume_file(const SourceDisk& d) {
    return sim.dir() + "/state/volumes/" + d.volume_id + ".img";
  }
  size_t count(const char* what) { return sim.state()[what].size(); }
  TestFailover failover{client, builder, exports, seed::test_network};
};

TEST_F(TestFailoverFixture, StartsATestVmAndCleanupRestoresReplicationState) {
  StepLog steps;
  TestFailoverRecord record = failover.start(vm, steps);
  for (const auto& s : steps.steps()) EXPECT_EQ(s.status, StepStatus::Done) << s.name;
  EXPECT_EQ(record.vm_name.rfind("web01-test-", 0), 0u) << record.vm_name;
  EXPECT_EQ(record.snapshots.size(), 3u);
  EXPECT_EQ(count("snapshots"), 3u);

  // Detached before the snapshots: KVM refuses snapshots of volumes attached to a
  // running VM (the OMA) while kvm.snapshot.enabled is off, as it is by default.
  std::vector<std::string> started;
  for (const auto& s : steps.steps()) started.push_back(s.name);
  EXPECT_EQ(started, (std::vector<std::string>{"detach-from-oma", "snapshot-volumes", "deploy-vm", "replace-root",
                                               "attach-data-disks", "start-vm"}));

  Json test_vm = vm_in_sim(record.vm_id);
  ASSERT_FALSE(test_vm.is_null());
  EXPECT_EQ(test_vm["state"], "Running");
  EXPECT_EQ(test_vm["name"], record.vm_name);
  EXPECT_EQ(test_vm["displayname"], "web01");
  // CloudStack gives a VM one NIC per network: the test network once.
  ASSERT_EQ(test_vm["nic"].size(), 1u);
  EXPECT_EQ(test_vm["nic"][0]["networkid"], seed::test_network);
  EXPECT_NE(test_vm["nic"][0]["macaddress"], "00:50:56:aa:bb:01");  // the source still uses it
  EXPECT_EQ(volumes.get(vm.disks[1].volume_id).device_id, 0);  // the OS disk boots
  // The source is never touched.
  for (const auto& e : events) EXPECT_EQ(e.find("power"), std::string::npos) << e;
  EXPECT_TRUE(power.on);
  EXPECT_TRUE(exports.current.empty());

  // The test VM writes over every disk's replicated data.
  for (const auto& d : vm.disks) test::write_at(volume_file(d), 4096, "TEST-VM-WROTE-HERE");

  StepLog cleanup_steps;
  failover.cleanup(vm, record, cleanup_steps);
  std::vector<std::string> names;
  for (const auto& s : cleanup_steps.steps()) {
    names.push_back(s.name);
    EXPECT_EQ(s.status, StepStatus::Done) << s.name << ": " << s.detail;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"destroy-test-vm", "revert-snapshots",
                                             "delete-snapshots", "return-to-oma"}));
  EXPECT_EQ(count("snapshots"), 0u);
  expect_as_before();  // includes: markers back, test writes gone, no VM but the OMA
}

TEST_F(TestFailoverFixture, FailureAtStartRollsBack) {
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no capacity"}});
  StepLog steps;
  try {
    failover.start(vm, steps);
    FAIL();
  } catch (const CutoverError& e) {
    EXPECT_EQ(e.step(), "start-vm");
    EXPECT_NE(std::string(e.what()).find("no capacity"), std::string::npos);
  }
  EXPECT_EQ(count("snapshots"), 0u);
  expect_as_before();
}

TEST_F(TestFailoverFixture, FailureWhileSnapshottingRollsBack) {
  sim.fail({{"command", "createSnapshot"}, {"how", "job"}, {"skip", 1},
            {"errortext", "secondary storage full"}});
  StepLog steps;
  try {
    failover.start(vm, steps);
    FAIL();
  } catch (const CutoverError& e) {
    EXPECT_EQ(e.step(), "snapshot-volumes");
  }
  EXPECT_EQ(count("snapshots"), 0u);
  expect_as_before();
}

// The test VM's deploy ran but its answer never came back (a proxy's 504): the rollback
// finds the VM by the test VM's name and removes it; nothing is left behind.
TEST_F(TestFailoverFixture, ADeployWhoseAnswerWasLostLeavesNoTestVm) {
  sim.fail({{"command", "deployVirtualMachine"}, {"how", "lost"}});
  StepLog steps;
  TestFailoverRecord record;
  try {
    failover.start(vm, steps, record);
    FAIL() << "the test failover succeeded despite the failure";
  } catch (const CutoverError& e) {
    EXPECT_EQ(e.step(), "deploy-vm") << e.what();
    EXPECT_NE(std::string(e.what()).find("rolled back"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(record.vm_id.empty()) << "the deploy's answer was lost, so no id was known";
  EXPECT_EQ(steps.find("rollback-destroy-test-vm")->status, StepStatus::Done);
  EXPECT_EQ(count("snapshots"), 0u);
  expect_as_before();  // only the OMA's VM is left
}

TEST_F(TestFailoverFixture, CleanupThatFailsMidWayCanBeRunAgain) {
  StepLog steps;
  TestFailoverRecord record = failover.start(vm, steps);
  for (const auto& d : vm.disks) test::write_at(volume_file(d), 4096, "TEST-VM-WROTE-HERE");

  sim.fail({{"command", "revertSnapshot"}, {"how", "job"}, {"skip", 1},
            {"errortext", "revert refused"}});
  StepLog first;
  try {
    failover.cleanup(vm, record, first);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("revert refused"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("again"), std::string::npos) << e.what();
  }
  // The disk whose revert failed keeps its snapshot and stays off the OMA: its test
  // writes must not meet the next incremental pass.
  EXPECT_EQ(count("snapshots"), 1u);
  EXPECT_EQ(exports.current.size(), 2u);

  StepLog second;
  failover.cleanup(vm, record, second);
  EXPECT_EQ(count("snapshots"), 0u);
  expect_as_before();
}

// An account that may not expunge (a user, allow.user.expunge.recover.vm off): the test
// VM is destroyed without expunge, the step says so, and the cleanup completes.
TEST(TestFailoverAccount, WithoutExpungePermissionTheVmIsDestroyedAndTheNoteSaysSo) {
  test::SimOptions o;
  o.user_account = true;
  test::SimServer sim(o);
  Client client(sim.endpoint(), test::SimServer::fast_client_options());
  CloudStackVolumes volumes(client, sim.volumes_config());
  TargetSettings t;
  t.zone_id = seed::zone;
  t.service_offering_id = seed::custom_service_offering;
  t.template_id = seed::ready_template;
  t.networks["VM Network"] = {seed::prod_network, true};
  VmBuilder builder(client, volumes, t);
  test::Events events;
  test::FakeExports exports(events);
  SourceVm vm;
  vm.vm_uuid = "50123456-aaaa-bbbb-cccc-1234567890ab";
  vm.name = "db01";
  vm.nics = {{"VM Network", "00:50:56:aa:bb:01"}};
  vm.disks = {{{vm.vm_uuid, "2000", test::kMiB}, 0, true, ""}};
  vm.disks[0].volume_id = volumes.create(vm.disks[0].disk).id;
  exports.ensure(vm.disks[0].disk, vm.disks[0].volume_id, volumes.attach_to_oma(vm.disks[0].volume_id, vm.disks[0].disk));
  EXPECT_FALSE(can_expunge(client));

  TestFailover failover(client, builder, exports, seed::test_network);
  StepLog steps;
  TestFailoverRecord record = failover.start(vm, steps);
  StepLog cleanup;
  failover.cleanup(vm, record, cleanup);
  const Step* destroy = cleanup.find("destroy-test-vm");
  ASSERT_NE(destroy, nullptr);
  EXPECT_EQ(destroy->status, StepStatus::Done);
  EXPECT_NE(destroy->detail.find("not expunged"), std::string::npos) << destroy->detail;
  bool destroyed = false;
  const Json st = sim.state();
  for (const auto& v : st["virtualmachines"]) destroyed |= v["id"] == record.vm_id && v["state"] == "Destroyed";
  EXPECT_TRUE(destroyed);
  EXPECT_EQ(volumes.get(vm.disks[0].volume_id).virtual_machine_id, sim.oma_vm_id());
}

}  // namespace
}  // namespace mk::cloudstack
