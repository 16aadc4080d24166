// MigratedVm: the common ground of cutover and test-failover tests. One simulator, a
// client, CloudStackVolumes and a VmBuilder for it, strict fakes of the OMA's
// collaborators, and a source VM of three disks (listed out of unit order) and two NICs
// that is already replicated: its volumes exist, are attached to the OMA, hold a marker
// each and are exported. expect_as_before() checks that the OMA and the source are
// exactly as SetUp left them. Not thread-safe; one per test.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>

#include "cloudstack/cutover.h"
#include "fakes.h"
#include "sim_server.h"
#include "support/files.h"

namespace mk::cloudstack::test {

constexpr uint64_t kMiB = uint64_t{1} << 20;

using mk::test::read_at;
using mk::test::write_at;

class MigratedVm : public ::testing::Test {
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
      exports.ensure(d.disk, d.volume_id, device);
    }
    events.clear();
  }
  static std::string marker(const SourceDisk& d) { return "disk-" + d.disk.disk_key + "-data"; }

  VolumesConfig volumes_config() { return sim.volumes_config(); }
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
  static ClientOptions client_options() {
    ClientOptions o = SimServer::fast_client_options();
    o.job_timeouts["deployVirtualMachine"] = std::chrono::milliseconds(500);
    return o;
  }
  Client client{sim.endpoint(), client_options()};
  CloudStackVolumes volumes{client, volumes_config()};
  VmBuilder builder{client, volumes, target()};
  Events events;
  FakeSourcePower power{events};
  FakeFinalPass final_pass{events, power};
  FakeExports exports{events};
  SourceVm vm;
};

}  // namespace mk::cloudstack::test
