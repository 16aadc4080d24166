// Cutover against the simulator with strict fakes of the source, final pass and exports:
// the whole flow, then a failure injected at each step, each leaving the OMA (volumes
// attached, devices present, exports back, data intact) and the source as they were.
#include "cloudstack/cutover.h"

#include <gtest/gtest.h>

#include "migrated_vm.h"

namespace mk::cloudstack {
namespace {

namespace seed = test::seed;


class CutoverFixture : public test::MigratedVm {
 protected:
  // Runs a cutover that must fail and returns its error text.
  std::string failed_cutover(StepLog& steps, CutoverRecord& record) {
    Cutover cutover(builder, power, final_pass, exports, fast());
    try {
      cutover.run(vm, steps, record);
      ADD_FAILURE() << "the cutover succeeded despite the failure";
    } catch (const CutoverError& e) {
      failed_step = e.step();
      return e.what();
    }
    return "";
  }
  std::string failed_step;
};

TEST_F(CutoverFixture, BuildsTheVmFromTheVolumes) {
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  std::string id = cutover.run(vm, steps);

  std::vector<std::string> names;
  for (const auto& s : steps.steps()) {
    names.push_back(s.name);
    EXPECT_EQ(s.status, StepStatus::Done) << s.name << ": " << s.detail;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"final-pass", "detach-from-oma", "deploy-vm",
                                             "replace-root", "attach-data-disks", "start-vm"}));
  // Source: asked to shut down, then the final pass; exports gone before detaching.
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0], "shutdown_guest " + vm.vm_uuid);
  EXPECT_EQ(events[1], "final_pass " + vm.vm_uuid);
  EXPECT_FALSE(power.on);
  EXPECT_TRUE(exports.current.empty());

  Json created = vm_in_sim(id);
  ASSERT_FALSE(created.is_null());
  EXPECT_EQ(created["state"], "Running");
  EXPECT_EQ(created["name"], "web01");
  EXPECT_EQ(created["cpunumber"], 4);
  EXPECT_EQ(created["memory"], 6144);
  ASSERT_EQ(created["nic"].size(), 2u);
  EXPECT_EQ(created["nic"][0]["networkid"], seed::prod_network);
  EXPECT_EQ(created["nic"][0]["macaddress"], "00:50:56:aa:bb:01");
  EXPECT_EQ(created["nic"][1]["networkid"], seed::nomac_network);
  EXPECT_NE(created["nic"][1]["macaddress"], "00:50:56:aa:bb:02");

  // OS disk as device 0 (the root), data disks in unit order; the template's root gone.
  const Json st = sim.state();
  EXPECT_EQ(st["volumes"].size(), 3u);
  std::map<std::string, int> device_of;
  for (const auto& d : vm.disks) {
    Volume v = volumes.get(d.volume_id);
    EXPECT_EQ(v.virtual_machine_id, id);
    device_of[d.disk.disk_key] = v.device_id;
    EXPECT_FALSE(std::filesystem::exists(sim.by_id_dir() + "/" +
                                         CloudStackVolumes::device_link_name(d.volume_id)));
  }
  EXPECT_EQ(device_of["2000"], 0);
  EXPECT_LT(device_of["2001"], device_of["2002"]);
  EXPECT_GT(device_of["2001"], 0);
  EXPECT_EQ(volumes.get(vm.disks[1].volume_id).type, "ROOT");
}

// The deploy carries a CPU speed when the custom offering names none (CloudStack refuses
// the deploy otherwise), and every NIC on its own network, the further ones added with
// addNicToVirtualMachine.
TEST_F(CutoverFixture, CustomOfferingGetsACpuSpeedAndEveryNicIsAdded) {
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  std::string id = cutover.run(vm, steps);
  const Json st = sim.state();
  int deploys = 0, nics_added = 0;
  for (const auto& call : st["calls"]) {
    if (call["command"] == "deployVirtualMachine") {
      ++deploys;
      EXPECT_EQ(call["params"].value("details[0].cpuSpeed", ""), "1000");
      EXPECT_EQ(call["params"].value("iptonetworklist[1].networkid", ""), "") << "one network per deploy entry";
    }
    if (call["command"] == "addNicToVirtualMachine") {
      ++nics_added;
      EXPECT_EQ(call["params"]["networkid"], seed::nomac_network);
      EXPECT_FALSE(call["params"].contains("macaddress")) << "the network takes no chosen MAC";
    }
  }
  EXPECT_EQ(deploys, 1);
  EXPECT_EQ(nics_added, 1);
  EXPECT_EQ(vm_in_sim(id)["nic"].size(), 2u);
}

// CloudStack gives a VM one NIC per network: two source NICs mapped to one network
// would silently become one. Refused before anything, naming both.
TEST_F(CutoverFixture, TwoNicsOnOneNetworkAreRefusedBeforeAnything) {
  vm.nics.push_back({"VM Network", "00:50:56:aa:bb:03"});
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  try {
    cutover.run(vm, steps);
    FAIL() << "a VM with two NICs on one network was built";
  } catch (const UsageError& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("00:50:56:aa:bb:01"), std::string::npos) << what;
    EXPECT_NE(what.find("00:50:56:aa:bb:03"), std::string::npos) << what;
    EXPECT_NE(what.find("one NIC per network"), std::string::npos) << what;
  }
  EXPECT_TRUE(steps.steps().empty());
  expect_as_before();
}

// VMware names become RFC 1123 host names; the VMware name stays as the display name;
// a name another VM holds gets the VM's UUID.
TEST_F(CutoverFixture, NamesAreHostNamesAndTheVmwareNameIsTheDisplayName) {
  vm.name = "Web Server (prod) #1";
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  Json created = vm_in_sim(cutover.run(vm, steps));
  EXPECT_EQ(created["name"], "Web-Server-prod-1");
  EXPECT_EQ(created["displayname"], "Web Server (prod) #1");
}

TEST_F(CutoverFixture, ATakenNameIsDisambiguated) {
  Json started = client.call("deployVirtualMachine", {{"serviceofferingid", seed::fixed_service_offering},
                                                      {"templateid", seed::ready_template},
                                                      {"zoneid", seed::zone},
                                                      {"name", "web01"},
                                                      {"iptonetworklist[0].networkid", seed::prod_network},
                                                      {"startvm", "false"}});
  std::string other = client.wait_for_job("deployVirtualMachine", started["jobid"])["virtualmachine"]["id"];
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  Json created = vm_in_sim(cutover.run(vm, steps));
  EXPECT_EQ(created["name"], "web01-501234");
  EXPECT_NE(steps.find("deploy-vm")->detail.find("web01-501234"), std::string::npos);
  client.call_async("destroyVirtualMachine", {{"id", other}, {"expunge", "true"}});
}

TEST_F(CutoverFixture, FixedOfferingGetsNoCpuOrMemoryDetails) {
  TargetSettings t = target();
  t.service_offering_id = seed::fixed_service_offering;
  VmBuilder fixed(client, volumes, t);
  StepLog steps;
  Cutover cutover(fixed, power, final_pass, exports, fast());
  std::string id = cutover.run(vm, steps);
  EXPECT_EQ(vm_in_sim(id)["cpunumber"], 2);  // the offering's, not the source's 4
  const Json st = sim.state();
  for (const auto& call : st["calls"]) {
    if (call["command"] != "deployVirtualMachine") continue;
    for (const auto& [key, value] : call["params"].items()) {
      EXPECT_EQ(key.find("details"), std::string::npos) << key;
    }
  }
}

TEST_F(CutoverFixture, GuestThatIgnoresShutdownIsPoweredOff) {
  power.guest_obeys_shutdown = false;
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  cutover.run(vm, steps);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events[0], "shutdown_guest " + vm.vm_uuid);
  EXPECT_EQ(events[1], "power_off " + vm.vm_uuid);
  EXPECT_EQ(events[2], "final_pass " + vm.vm_uuid);
}

TEST_F(CutoverFixture, UnmappedNetworkIsRefusedBeforeAnything) {
  vm.nics.push_back({"DMZ", "00:50:56:aa:bb:03"});
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  try {
    cutover.run(vm, steps);
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("DMZ"), std::string::npos);
  }
  EXPECT_TRUE(steps.steps().empty());
  EXPECT_TRUE(events.empty());
  expect_as_before();
}

struct Injection {
  std::string step;        // where the cutover must report the failure
  nlohmann::json rule;     // simulator failure rule ({} = the final pass fails)
};

void PrintTo(const Injection& i, std::ostream* os) { *os << i.step << " " << i.rule.dump(); }

class CutoverFailure : public CutoverFixture, public ::testing::WithParamInterface<Injection> {};

TEST_P(CutoverFailure, RollsBackLeavingOmaAndSourceAsTheyWere) {
  const Injection& inj = GetParam();
  bool hang = !inj.rule.is_null() && inj.rule["how"] == "hang";
  // What the error must say: the injected text, or the client's time-out for a hung job.
  std::string text = hang ? "still running" : "injected failure at " + inj.step;
  if (inj.rule.is_null()) {
    final_pass.fail_with = text;
  } else {
    nlohmann::json rule = inj.rule;
    rule["errortext"] = text;
    sim.fail(rule);
  }
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  try {
    cutover.run(vm, steps);
    FAIL() << "the cutover succeeded despite the failure";
  } catch (const CutoverError& e) {
    EXPECT_EQ(e.step(), inj.step) << e.what();
    EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rolled back"), std::string::npos) << e.what();
  }
  const Step* failed = steps.find(inj.step);
  ASSERT_NE(failed, nullptr);
  EXPECT_EQ(failed->status, StepStatus::Failed);
  EXPECT_NE(failed->detail.find(text), std::string::npos);
  const Step* rollback = steps.find("rollback");
  ASSERT_NE(rollback, nullptr);
  EXPECT_EQ(rollback->status, StepStatus::Done) << rollback->detail;
  // We powered it off, so we powered it on again, last.
  EXPECT_EQ(events.back(), "power_on " + vm.vm_uuid);
  expect_as_before();
}

INSTANTIATE_TEST_SUITE_P(
    EachStep, CutoverFailure,
    ::testing::Values(
        Injection{"final-pass", nullptr},
        // The second disk's detach fails: the first one must come back.
        Injection{"detach-from-oma", {{"command", "detachVolume"}, {"how", "job"}, {"skip", 1}}},
        Injection{"deploy-vm", {{"command", "deployVirtualMachine"}, {"how", "job"}}},
        // A deploy job that never ends: the per-command timeout, then the rollback.
        Injection{"deploy-vm", {{"command", "deployVirtualMachine"}, {"how", "hang"}}},
        // The VM is deployed, its second NIC cannot be added: the VM goes again.
        Injection{"deploy-vm", {{"command", "addNicToVirtualMachine"}, {"how", "job"}}},
        Injection{"replace-root",
                  {{"command", "deleteVolume"}, {"how", "error"}, {"errorcode", 431}}},
        Injection{"replace-root", {{"command", "attachVolume"}, {"how", "job"}}},
        Injection{"attach-data-disks",
                  {{"command", "attachVolume"}, {"how", "job"}, {"skip", 2}}},
        Injection{"start-vm", {{"command", "startVirtualMachine"}, {"how", "job"}}},
        Injection{"start-vm",
                  {{"command", "startVirtualMachine"}, {"how", "error"}, {"errorcode", 431}}}),
    [](const auto& info) {
      std::string n = info.param.step + "_" + std::to_string(info.index);
      for (auto& c : n) if (c == '-') c = '_';
      return n;
    });

TEST_F(CutoverFixture, SourceAlreadyOffIsNotPoweredOnByARollback) {
  power.on = false;
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no host"}});
  StepLog steps;
  Cutover cutover(builder, power, final_pass, exports, fast());
  EXPECT_THROW(cutover.run(vm, steps), CutoverError);
  for (const auto& e : events) EXPECT_EQ(e.find("power"), std::string::npos) << e;
  EXPECT_FALSE(power.on);
  power.on = true;  // for the common check
  expect_as_before();
}


std::string after(const std::string& text, const std::string& marker) {
  auto at = text.find(marker);
  return at == std::string::npos ? "" : text.substr(at + marker.size());
}

// Two failures: the cutover fails at start-vm, then its rollback can neither destroy the
// new VM nor give one volume back to the OMA. The rest is undone; the error and the
// rollback step name exactly what is left and what to do; the record lets the rollback
// finish once the causes are gone.
TEST_F(CutoverFixture, RollbackThatCannotFinishNamesWhatIsLeftAndFinishesLater) {
  const SourceDisk stuck = vm.disks[2];  // disk 2001
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no host with capacity"}});
  sim.fail({{"command", "destroyVirtualMachine"}, {"how", "error"}, {"errorcode", 530},
            {"errortext", "VM is locked by another job"}});
  sim.fail({{"command", "attachVolume"}, {"how", "job"}, {"errortext", "primary storage busy"},
            {"params", {{"id", stuck.volume_id}, {"virtualmachineid", sim.oma_vm_id()}}}});
  StepLog steps;
  CutoverRecord record;
  std::string error = failed_cutover(steps, record);
  EXPECT_EQ(failed_step, "start-vm") << error;
  Cutover cutover(builder, power, final_pass, exports, fast());
  ASSERT_FALSE(record.vm_id.empty());
  EXPECT_NE(error.find("no host with capacity"), std::string::npos) << error;
  std::string left = after(error, "ROLLBACK INCOMPLETE: ");
  ASSERT_FALSE(left.empty()) << error;
  EXPECT_NE(left.find("CloudStack VM " + record.vm_id + " is still there: removing it failed"), std::string::npos)
      << left;
  EXPECT_NE(left.find("VM is locked by another job"), std::string::npos) << left;
  EXPECT_NE(left.find("none of our volumes is on it: destroy it with expunge"), std::string::npos) << left;
  EXPECT_NE(left.find("volume " + stuck.volume_id + " (disk 2001) is not back on the OMA"), std::string::npos) << left;
  EXPECT_NE(left.find("primary storage busy"), std::string::npos) << left;
  EXPECT_NE(left.find("it is detached: attach it to the OMA's VM"), std::string::npos) << left;
  EXPECT_EQ(left.find("(disk 2000)"), std::string::npos) << "disk 2000 is back: " << left;
  EXPECT_EQ(left.find("(disk 2002)"), std::string::npos) << "disk 2002 is back: " << left;
  EXPECT_EQ(left.find("powered OFF"), std::string::npos) << left;
  const Step* rollback = steps.find("rollback");
  ASSERT_NE(rollback, nullptr);
  EXPECT_EQ(rollback->status, StepStatus::Failed);
  EXPECT_EQ(rollback->detail, left);
  // What could be undone was: the source is on again, the other volumes are back.
  EXPECT_EQ(events.back(), "power_on " + vm.vm_uuid);
  EXPECT_FALSE(vm_in_sim(record.vm_id).is_null()) << "the VM the error names is not there";
  EXPECT_EQ(volumes.get(stuck.volume_id).virtual_machine_id, "");
  EXPECT_EQ(volumes.get(vm.disks[0].volume_id).virtual_machine_id, sim.oma_vm_id());

  // The causes are gone (the rules were for one call each): the rollback finishes.
  StepLog again;
  cutover.finish_rollback(vm, record, again);
  ASSERT_NE(again.find("rollback"), nullptr);
  EXPECT_EQ(again.find("rollback")->status, StepStatus::Done) << again.find("rollback")->detail;
  expect_as_before();
}

// The rollback cannot detach one volume from the new VM: the others still come back,
// the VM is not destroyed (it would take the volume with it), and the error names the
// VM, the volume on it and what to do.
TEST_F(CutoverFixture, RollbackThatCannotDetachAVolumeLeavesTheVmWithItAndSaysSo) {
  // Disk 2002, the first the tear-down detaches: its first detach (from the OMA) passes.
  const SourceDisk stuck = vm.disks[0];
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no host with capacity"}});
  sim.fail({{"command", "detachVolume"}, {"how", "job"}, {"errortext", "volume busy"}, {"skip", 1},
            {"params", {{"id", stuck.volume_id}}}});
  StepLog steps;
  CutoverRecord record;
  std::string error = failed_cutover(steps, record);
  EXPECT_EQ(failed_step, "start-vm") << error;
  Cutover cutover(builder, power, final_pass, exports, fast());
  std::string left = after(error, "ROLLBACK INCOMPLETE: ");
  ASSERT_FALSE(left.empty()) << error;
  EXPECT_NE(left.find("CloudStack VM " + record.vm_id + " is still there: removing it failed"), std::string::npos)
      << left;
  EXPECT_NE(left.find("volume busy"), std::string::npos) << left;
  EXPECT_NE(left.find("our volume " + stuck.volume_id + " (disk 2002) on it: detach them from it, then destroy it "
                      "with expunge"),
            std::string::npos)
      << left;
  EXPECT_NE(left.find("volume " + stuck.volume_id + " (disk 2002) is not back on the OMA"), std::string::npos) << left;
  EXPECT_NE(left.find("it is attached to VM " + record.vm_id + ": detach it from there and attach it to the OMA's VM"),
            std::string::npos)
      << left;
  EXPECT_EQ(left.find("(disk 2000)"), std::string::npos) << "disk 2000 is back: " << left;
  EXPECT_EQ(left.find("(disk 2001)"), std::string::npos) << "disk 2001 is back: " << left;
  EXPECT_EQ(volumes.get(stuck.volume_id).virtual_machine_id, record.vm_id);
  EXPECT_EQ(volumes.get(vm.disks[1].volume_id).virtual_machine_id, sim.oma_vm_id());
  EXPECT_EQ(volumes.get(vm.disks[2].volume_id).virtual_machine_id, sim.oma_vm_id());
  EXPECT_EQ(steps.find("rollback")->status, StepStatus::Failed);

  StepLog again;
  cutover.finish_rollback(vm, record, again);
  EXPECT_EQ(again.find("rollback")->status, StepStatus::Done) << again.find("rollback")->detail;
  expect_as_before();
}

// The source cannot be powered on again (vCenter refuses): everything else is undone,
// and the error says the source is still off and what to do.
TEST_F(CutoverFixture, SourceThatCannotBePoweredOnAgainIsReportedOff) {
  power.fail_power_on = true;
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no host with capacity"}});
  StepLog steps;
  CutoverRecord record;
  std::string error = failed_cutover(steps, record);
  EXPECT_EQ(failed_step, "start-vm") << error;
  Cutover cutover(builder, power, final_pass, exports, fast());
  std::string left = after(error, "ROLLBACK INCOMPLETE: ");
  ASSERT_FALSE(left.empty()) << error;
  EXPECT_NE(left.find("the source VM web01 (" + vm.vm_uuid + ") is still powered OFF: powering it on again failed: "
                      "VMA: power on refused; power it on in vCenter"),
            std::string::npos)
      << left;
  EXPECT_EQ(left.find("volume "), std::string::npos) << "the volumes are back: " << left;
  EXPECT_EQ(left.find("CloudStack VM"), std::string::npos) << "the VM is gone: " << left;
  EXPECT_EQ(steps.find("rollback")->status, StepStatus::Failed);
  EXPECT_FALSE(power.on);
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 1u);
  for (const auto& d : vm.disks) {
    EXPECT_EQ(volumes.get(d.volume_id).virtual_machine_id, sim.oma_vm_id()) << d.disk.disk_key;
    EXPECT_TRUE(exports.current.count(d.disk.disk_key)) << d.disk.disk_key;
  }

  power.fail_power_on = false;
  StepLog again;
  cutover.finish_rollback(vm, record, again);
  EXPECT_EQ(again.find("rollback")->status, StepStatus::Done);
  expect_as_before();
}

// The deploy ran in CloudStack but its answer never came back (a proxy's 504): the VM
// it made is found by the name the cutover gave it and removed, so a second cutover
// makes one VM under that name, not a duplicate beside a leaked one.
TEST_F(CutoverFixture, ADeployWhoseAnswerWasLostLeavesNoVmBehind) {
  sim.fail({{"command", "deployVirtualMachine"}, {"how", "lost"}});
  StepLog steps;
  CutoverRecord record;
  std::string error = failed_cutover(steps, record);
  EXPECT_EQ(failed_step, "deploy-vm") << error;
  EXPECT_NE(error.find("HTTP 504"), std::string::npos) << error;
  EXPECT_NE(error.find("rolled back"), std::string::npos) << error;
  int deploys = 0;
  const Json st = sim.state();
  for (const auto& call : st["calls"]) deploys += call["command"] == "deployVirtualMachine";
  EXPECT_EQ(deploys, 1);
  expect_as_before();

  StepLog second;
  std::string id = Cutover(builder, power, final_pass, exports, fast()).run(vm, second);
  EXPECT_EQ(vm_in_sim(id)["name"], "web01");
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 2u);  // the OMA and this one
}

// The deploy's job outlives the client's deadline and completes after the client gave
// up: the outcome is reported as unknown, and the rollback removes the VM it made.
TEST_F(CutoverFixture, ADeployThatEndsAfterTheClientGaveUpIsRemovedByTheRollback) {
  sim.fail({{"command", "deployVirtualMachine"}, {"how", "late"}});
  StepLog steps;
  CutoverRecord record;
  std::string error = failed_cutover(steps, record);
  EXPECT_EQ(failed_step, "deploy-vm") << error;
  EXPECT_NE(error.find("is unknown: still running"), std::string::npos) << error;
  EXPECT_NE(error.find("rolled back"), std::string::npos) << error;
  const Json st = sim.state();
  int deploy_jobs = 0;
  for (const auto& job : st["jobs"]) {
    if (job["cmd"] != "deployVirtualMachine") continue;
    ++deploy_jobs;
    EXPECT_EQ(job["jobstatus"], 1) << "the deploy completed after the client gave up";
  }
  EXPECT_EQ(deploy_jobs, 1);
  expect_as_before();
}

}  // namespace
}  // namespace mk::cloudstack
