// CloudStack preflight and limits against the simulator, each limit set as a real cloud
// sets it: data volumes per VM, custom disk size, the OMA VM's VM snapshots and backup
// offering, custom offering ranges, kvm.snapshot.enabled and the expunge permission.
#include "cloudstack/preflight.h"

#include <gtest/gtest.h>

#include <set>

#include "sim_server.h"
#include "common/units.h"

namespace mk::cloudstack {
namespace {

namespace seed = test::seed;

SourceVm source_vm(int disks, uint64_t disk_bytes = GiB) {
  SourceVm vm;
  vm.vm_uuid = "50123456-aaaa-bbbb-cccc-1234567890ab";
  vm.name = "web01";
  vm.cpus = 4;
  vm.memory_mib = 4096;
  vm.nics = {{"VM Network", "00:50:56:aa:bb:01"}};
  for (int i = 0; i < disks; ++i) vm.disks.push_back({{vm.vm_uuid, std::to_string(2000 + i), disk_bytes}, i, i == 0, ""});
  return vm;
}

TargetSettings target(const std::string& offering = seed::custom_service_offering) {
  TargetSettings t;
  t.zone_id = seed::zone;
  t.service_offering_id = offering;
  t.template_id = seed::ready_template;
  t.networks["VM Network"] = {seed::prod_network, true};
  return t;
}

std::set<std::string> codes(const std::vector<TargetFinding>& findings, bool blocking) {
  std::set<std::string> out;
  for (const auto& f : findings) {
    if (f.blocking == blocking) out.insert(f.code);
  }
  return out;
}

TEST(CloudPreflight, LimitsAreReadFromTheCloud) {
  test::SimOptions o;
  o.max_data_volumes = 5;
  o.custom_disk_max_gb = 200;
  o.kvm_snapshot_enabled = true;
  test::SimServer sim(o);
  Client client(sim.endpoint(), test::SimServer::fast_client_options());
  CloudLimits l = read_limits(client, sim.oma_vm_id());
  EXPECT_EQ(l.hypervisor, "KVM");
  EXPECT_EQ(l.max_data_volumes, 5);
  EXPECT_TRUE(l.max_data_volumes_known);
  EXPECT_EQ(l.max_volume_gib, 200u);
  EXPECT_TRUE(l.kvm_snapshot_enabled);
  EXPECT_TRUE(l.can_expunge);  // the simulator's key is a root admin's
  EXPECT_EQ(attached_data_volumes(client, sim.oma_vm_id()), 0);
}

TEST(CloudPreflight, AUserKeyGetsTheHypervisorsDefaultCap) {
  test::SimOptions o;
  o.user_account = true;
  o.max_data_volumes = 5;
  test::SimServer sim(o);
  Client client(sim.endpoint(), test::SimServer::fast_client_options());
  CloudLimits l = read_limits(client, sim.oma_vm_id());
  EXPECT_EQ(l.max_data_volumes, 32);  // KVM's default: the key may not read the real one
  EXPECT_FALSE(l.max_data_volumes_known);
  EXPECT_FALSE(l.can_expunge);
  EXPECT_EQ(default_max_data_volumes("VMware"), 6);
}

TEST(CloudPreflight, EveryFindingAtOnceBeforeAnythingIsCreated) {
  test::SimOptions o;
  o.max_data_volumes = 2;
  o.custom_disk_max_gb = 2;
  o.oma_vm_snapshot = true;
  o.oma_backup_offering = "bo000000-0000-4000-8000-000000000001";
  test::SimServer sim(o);
  Client client(sim.endpoint(), test::SimServer::fast_client_options());
  SourceVm vm = source_vm(3);
  vm.disks[2].disk.capacity_bytes = 3 * GiB;
  vm.cpus = 16;          // the custom offering accepts 1 to 8
  vm.memory_mib = 256;   // and 512 to 16384 MiB
  CloudLimits l = read_limits(client, sim.oma_vm_id());
  auto findings = check_target(client, l, target(), vm, sim.oma_vm_id());
  EXPECT_EQ(codes(findings, true), (std::set<std::string>{"disk-too-large", "too-many-disks", "offering-cpus",
                                                           "offering-memory", "oma-vm-snapshots",
                                                           "oma-backup-offering"}));
  EXPECT_EQ(codes(findings, false), std::set<std::string>{"kvm-snapshots-off"});
  for (const auto& f : findings) {
    if (f.code == "disk-too-large") {
      EXPECT_EQ(f.disk_key, "2002");
      EXPECT_NE(f.text().find("custom.diskoffering.size.max"), std::string::npos) << f.text();
    }
  }
  EXPECT_TRUE(sim.state()["volumes"].empty()) << "the preflight created something";
}

TEST(CloudPreflight, AVmThatFitsHasOnlyNotes) {
  test::SimOptions o;
  o.user_account = true;
  test::SimServer sim(o);
  Client client(sim.endpoint(), test::SimServer::fast_client_options());
  CloudLimits l = read_limits(client, sim.oma_vm_id());
  auto findings = check_target(client, l, target(), source_vm(2), sim.oma_vm_id());
  EXPECT_TRUE(codes(findings, true).empty());
  EXPECT_EQ(codes(findings, false), (std::set<std::string>{"kvm-snapshots-off", "no-expunge"}));
  auto fixed = check_target(client, l, target(seed::fixed_service_offering), source_vm(1), sim.oma_vm_id());
  EXPECT_TRUE(codes(fixed, false).count("offering-fixed"));
  EXPECT_TRUE(codes(fixed, true).empty());
}

}  // namespace
}  // namespace mk::cloudstack
