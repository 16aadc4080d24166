// Cutover against the simulator with strict fakes of the source, final pass and exports:
// the whole flow, then a failure injected at each step, each leaving the OMA (volumes
// attached, devices present, exports back, data intact) and the source as they were.
#include "cloudstack/cutover.h"

#include <gtest/gtest.h>

#include <fstream>

#include "fakes.h"
#include "sim_server.h"

namespace mk::cloudstack {
namespace {

using test::SimServer;
namespace seed = test::seed;

constexpr uint64_t kMiB = uint64_t{1} << 20;

std::string read_at(const std::string& path, uint64_t offset, size_t n) {
  std::ifstream f(path, std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  std::string s(n, '\0');
  f.read(s.data(), static_cast<std::streamsize>(n));
  return s;
}

void write_at(const std::string& path, uint64_t offset, const std::string& data) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(static_cast<std::streamoff>(offset));
  f << data;
}

// A source VM of three disks (listed out of unit order) and two NICs, replicated: its
// volumes exist, are attached to the OMA, hold a marker each and are exported.
class CutoverFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    vm.vm_uuid = "50123456-aaaa-bbbb-cccc-1234567890ab";
    vm.name = "web01";
    vm.cpus = 4;
    vm.memory_mib = 6144;
    vm.nics = {{"VM Network", "00:50:56:aa:bb:01"}, {"Backup", "00:50:56:aa:bb:02"}};
    vm.disks = {{{vm.vm_uuid, "2002", 2 * kMiB}, 2, false, ""},
                {{vm.vm_uuid, "2000", 3 * kMiB}, 0, true, ""},
                {{vm.vm_uuid, "2001", 1 * kMiB}, 1, false, ""}};
    for (auto& d : vm.disks) {
      d.volume_id = volumes.create(d.disk).id;
      std::string device = volumes.attach_to_oma(d.volume_id, d.disk);
      write_at(device, 4096, marker(d));
      exports.recreate(d.disk, d.volume_id, device);
    }
    events.clear();
  }
  static std::string marker(const SourceDisk& d) { return "disk-" + d.disk.disk_key + "-data"; }

  VolumesConfig volumes_config() {
    VolumesConfig c;
    c.oma_id = "oma-1";
    c.oma_vm_id = sim.oma_vm_id();
    c.zone_id = seed::zone;
    c.disk_offering_id = seed::custom_disk_offering;
    c.by_id_dir = sim.by_id_dir();
    c.device_timeout = std::chrono::seconds(10);
    return c;
  }
  TargetSettings target() {
    TargetSettings t;
    t.zone_id = seed::zone;
    t.service_offering_id = seed::custom_service_offering;
    t.template_id = seed::ready_template;
    t.networks["VM Network"] = {seed::prod_network, true};
    t.networks["Backup"] = {seed::nomac_network, false};
    return t;
  }
  CutoverOptions fast() { return {std::chrono::milliseconds(200), std::chrono::milliseconds(5)}; }

  Json vm_in_sim(const std::string& id) {
    const Json st = sim.state();
    for (const auto& v : st["virtualmachines"]) {
      if (v["id"] == id) return v;
    }
    return nullptr;
  }

  // The OMA and the source exactly as before the cutover.
  void expect_as_before() {
    const Json st = sim.state();
    ASSERT_EQ(st["virtualmachines"].size(), 1u) << "a VM was left behind";
    ASSERT_EQ(st["volumes"].size(), vm.disks.size()) << "a volume was left behind or lost";
    for (const auto& d : vm.disks) {
      Volume v = volumes.get(d.volume_id);
      EXPECT_EQ(v.virtual_machine_id, sim.oma_vm_id()) << d.disk.disk_key;
      std::string device = sim.by_id_dir() + "/" + CloudStackVolumes::device_link_name(d.volume_id);
      EXPECT_EQ(read_at(device, 4096, marker(d).size()), marker(d));
      ASSERT_TRUE(exports.current.count(d.disk.disk_key)) << "export of " << d.disk.disk_key;
      EXPECT_EQ(exports.current[d.disk.disk_key].first, d.volume_id);
      EXPECT_EQ(exports.current[d.disk.disk_key].second, device);
    }
    EXPECT_TRUE(power.on) << "the source was left off";
  }

  SimServer sim;
  Client client{sim.endpoint(), SimServer::fast_client_options()};
  CloudStackVolumes volumes{client, volumes_config()};
  VmBuilder builder{client, volumes, target()};
  test::Events events;
  test::FakeSourcePower power{events};
  test::FakeFinalPass final_pass{events, power};
  test::FakeExports exports{events};
  SourceVm vm;
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
  std::string text = "injected failure at " + inj.step;
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

}  // namespace
}  // namespace mk::cloudstack
