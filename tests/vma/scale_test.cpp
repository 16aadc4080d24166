// The lab at scale (issue 18, item 5): a vSphere lab of 256 VMs over 2 clusters of 4
// hosts and 2 datastores, made by vcsim's own model flags and seeded by the code mk-lab
// runs (two small sparse disks per VM, 128 KiB of data each, spread over the
// datastores), and the real `vma` discovering every one of them with its disks. The times it took are printed, never judged.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include "lab/vcsim/lab_vm.h"
#include "lab/vcsim/vcsim_lab.h"
#include "oma/vma/vma_client.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "vma_process.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"

namespace mk::vma::test {
namespace {

constexpr const char* kScaleToken = "vma-scale-token-7c31e9a0d4b2";
constexpr int kClusters = 2, kHostsPerCluster = 4, kDatastores = 2, kVms = 256;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(LabAtScale, VmaDiscoversAll256VmsWithTheirDisksAcrossClustersAndHosts) {
  auto t0 = std::chrono::steady_clock::now();
  mk::test::VcsimOptions vo;
  vo.inventory = {kClusters, kHostsPerCluster, 0, kVms / kClusters, kDatastores};
  mk::test::VcsimLab lab(vo);
  ASSERT_EQ(lab.inventory().vms(), kVms);
  auto session = vsphere::Session::connect(mk::test::lab_connect_options(lab));
  mk::test::LabSeedOptions seed{{16, 8}, mk::test::LabFill::Light, 1};
  nlohmann::json seeded = mk::test::seed_lab_vms(lab, *session, kVms, seed);
  double made_s = seconds_since(t0);
  ASSERT_EQ(seeded.size(), size_t(kVms));

  // The VMs are spread over both clusters and over the hosts of each (vcsim places a
  // cluster's VMs on its hosts): count them per host as vSphere lists them.
  int hosts_with_vms = 0, vms_on_hosts = 0;
  std::set<int> clusters_with_vms;
  for (int c = 0; c < kClusters; ++c) {
    for (int h = 0; h < kHostsPerCluster; ++h) {
      std::string path = fmt::format("DC0/host/DC0_C{}/DC0_C{}_H{}", c, c, h);
      auto host = vsphere::find_by_inventory_path(*session, path);
      ASSERT_TRUE(host.has_value()) << "no host " << path;
      std::vector<vsphere::xml::Document> keep;
      auto p = vsphere::retrieve(*session, *host, {"vm"}, keep);
      size_t n = p.get("vm") ? p.get("vm").children("ManagedObjectReference").size() : 0;
      vms_on_hosts += static_cast<int>(n);
      if (n > 0) {
        ++hosts_with_vms;
        clusters_with_vms.insert(c);
      }
    }
  }
  EXPECT_EQ(vms_on_hosts, kVms);
  EXPECT_EQ(clusters_with_vms.size(), size_t(kClusters));
  EXPECT_GE(hosts_with_vms, 2 * kClusters) << "the VMs sit on too few hosts";

  // Flat files stay cheap: sparse, 128 KiB of data per disk; half the disks on each datastore.
  uint64_t allocated = 0, apparent = 0;
  std::map<std::string, int> disks_per_datastore;
  for (const auto& vm : seeded) {
    for (const auto& d : vm["disks"]) {
      ++disks_per_datastore[vsphere::datastore_of(d["file_name"].get<std::string>())];
      struct stat st {};
      ASSERT_EQ(::stat(d["flat_file"].get<std::string>().c_str(), &st), 0);
      allocated += uint64_t(st.st_blocks) * 512;
      apparent += uint64_t(st.st_size);
    }
  }
  EXPECT_EQ(apparent, uint64_t(kVms) * (16 + 8) << 20);
  EXPECT_LE(allocated, uint64_t(kVms) * 2 * (256 << 10)) << "the lab's flat files are not sparse";
  EXPECT_EQ(disks_per_datastore, (std::map<std::string, int>{{"LocalDS_0", kVms}, {"LocalDS_1", kVms}}));

  mk::test::TempDir dir("mk-vma-scale");
  std::string token = dir.file("vma-token");
  mk::test::write_at(token, 0, std::string(kScaleToken) + "\n");
  std::filesystem::permissions(token, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  VmaProcessOptions o;
  o.state_dir = dir.file("state");
  o.token_file = token;
  o.psk_file = mk::test::make_psk_file(dir.file("nbd-psk.keys"), "oma");
  VmaProcess vma(lab, o);
  oma::HttpVmaClient client(vma.url(), std::chrono::seconds(300), kScaleToken);

  auto t1 = std::chrono::steady_clock::now();
  protocol::Discovery discovery = client.discover();
  double discover_s = seconds_since(t1);

  std::map<std::string, const protocol::DiscoveredVm*> by_id;
  for (const auto& v : discovery.vms) by_id[v.vm_id] = &v;
  EXPECT_EQ(discovery.vms.size(), size_t(kVms));
  size_t disks = 0;
  for (const auto& vm : seeded) {
    std::string id = vm["instance_uuid"];
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      ADD_FAILURE() << "the VMA did not discover " << vm["name"] << " (" << id << ")";
      continue;
    }
    const auto& v = *it->second;
    EXPECT_EQ(v.name, vm["name"].get<std::string>());
    EXPECT_EQ(v.datacenter, "DC0") << v.name;
    ASSERT_EQ(v.disks.size(), vm["disks"].size()) << v.name;
    for (size_t i = 0; i < v.disks.size(); ++i) {
      EXPECT_EQ(v.disks[i].disk_key.str(), std::to_string(vm["disks"][i]["key"].get<int>())) << v.name;
      EXPECT_EQ(v.disks[i].capacity_bytes, vm["disks"][i]["capacity_bytes"].get<int64_t>()) << v.name;
      ++disks;
    }
  }
  EXPECT_EQ(disks, size_t(2 * kVms));
  std::cout << fmt::format(
      "lab at scale: {} VMs ({} clusters x {} hosts, {} datastores), {} disks of 16+8 MiB ({:.1f} MiB allocated of {:.0f} MiB), "
      "made in {:.1f} s; vma discovery listed {} VMs with {} disks in {:.2f} s\n",
      kVms, kClusters, kHostsPerCluster, kDatastores, 2 * kVms, allocated / 1048576.0, apparent / 1048576.0, made_s,
      discovery.vms.size(), disks, discover_s);
}

}  // namespace
}  // namespace mk::vma::test
