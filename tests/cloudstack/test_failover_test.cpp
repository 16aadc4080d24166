// Test failover against the simulator: the test VM boots from the volumes while the
// source keeps running; cleanup throws away what the test VM wrote and gives the
// volumes back to the OMA exactly as replication left them.
#include "cloudstack/test_failover.h"

#include <gtest/gtest.h>

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

  Json test_vm = vm_in_sim(record.vm_id);
  ASSERT_FALSE(test_vm.is_null());
  EXPECT_EQ(test_vm["state"], "Running");
  EXPECT_EQ(test_vm["name"], record.vm_name);
  ASSERT_EQ(test_vm["nic"].size(), 2u);
  for (const auto& nic : test_vm["nic"]) {
    EXPECT_EQ(nic["networkid"], seed::test_network);
    EXPECT_NE(nic["macaddress"], "00:50:56:aa:bb:01");  // the source still uses it
  }
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

TEST(TestFailoverName, CarriesNameAndUtcTimestamp) {
  EXPECT_EQ(TestFailover::test_vm_name("web01", 1700000000), "web01-test-20231114221320");
}

}  // namespace
}  // namespace mk::cloudstack
