// NBD inside SSH to the node that holds a VM's volumes (issue 18, item 4; label scale):
// a VMA paired with a service of two OMA nodes (real `oma` processes over one real
// MariaDB, a real sshd per node on its own loopback address: service_nodes.h) runs the
// real `vma run --nbd-over-ssh` (vma-lab, against vcsim's lab). With the first node
// drained, the VM's volumes are placed on the second node, and its full pass and then an
// incremental pass copy through the VMA. It proves that:
//
//  * both passes complete on the second node and every disk equals its source by sha256
//    after each;
//  * the data went inside the SSH tunnel to that node, not directly to its NBD port: its
//    sshd (LogLevel DEBUG) logs the VMA's direct-tcpip channels to the node's NBD port,
//    at least one per disk in each pass; a VMA that connects directly
//    (without --nbd-over-ssh) opens none and fails this test;
//  * no channel went through the first node's tunnel.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <iostream>
#include <regex>

#include "service_nodes.h"
#include "vma_fixture.h"

namespace mk::vma::test {
namespace {

using nlohmann::json;
using oma::test::eventually;
using oma::test::Node;
using mk::test::read_file_or_empty;

// How many direct-tcpip channels (ssh -L forwards) an sshd log at LogLevel DEBUG shows
// to loopback port `port` ("server_request_direct_tcpip: originator 127.0.0.1 port 40312,
// target 127.0.0.1 port 34567").
int channels_to(const std::string& sshd_log, int port) {
  std::regex opened(fmt::format(R"(direct_tcpip: originator \S+ port \d+, target 127\.0\.0\.1 port {}\b)", port));
  return static_cast<int>(std::distance(std::sregex_iterator(sshd_log.begin(), sshd_log.end(), opened),
                                        std::sregex_iterator()));
}

class ServiceNodesNbd : public VmaFixture {
 protected:
  void TearDown() override {
    if (HasFailure() && service) {
      for (auto& [id, n] : service->nodes)
        std::cerr << id << " log:\n" << mk::test::log_tail(n.log, 4000) << "\n" << id << " sshd log:\n"
                  << mk::test::log_tail(n.sshd->log_path(), 3000) << "\n";
    }
    VmaFixture::TearDown();  // the VMA first, then the nodes and their database
    service.reset();
  }

  // The NBD port node `n` serves on, as the service's node list names it.
  int nbd_port_of(Node& n) {
    auto r = n.api->get("/api/v1/nodes");
    for (const auto& node : r.body["nodes"])
      if (node["node_id"] == n.id) return node["nbd_port"].get<int>();
    ADD_FAILURE() << "node " << n.id << " is not listed: " << r.raw;
    return -1;
  }

  // Runs a pass of `kind` on node `n` and expects it completed with every disk equal to its source.
  void pass_matches(Node& n, const std::string& vm_id, const std::string& kind) {
    auto r = n.api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", kind}}.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    json j = oma::test::wait_for_job(*n.api, r.body["job_id"], oma::test::job_ended, std::chrono::seconds(180));
    ASSERT_EQ(j["status"], "completed") << j.dump(2);
    EXPECT_EQ(expect_volumes_match_sources(*n.api, vm_id), 2) << kind << " pass";
  }

  std::unique_ptr<oma::test::Service> service;
};

TEST_F(ServiceNodesNbd, APassToTheSecondNodeCopiesInsideTheSshTunnelToThatNode) {
  service = std::make_unique<oma::test::Service>();
  // DEBUG: sshd logs each direct-tcpip channel with its target.
  Node& a = service->start("oma-a", "127.0.0.2", {"LogLevel DEBUG"});
  Node& b = service->start("oma-b", "127.0.0.3", {"LogLevel DEBUG"});

  std::string state = dir.file("vma/state");
  std::string vma_id = oma::test::pair_vma(*service, a, oma::test::pairing_bundle(a), VMA_BIN, state);
  vma = std::make_unique<VmaProcess>(lab, VmaProcessOptions{.state_dir = state,
                                                            .token_file = state + "/api.token",
                                                            .psk_file = state + "/nbd-psk.keys",
                                                            .nbd_over_ssh = true});
  std::string token = mk::test::read_file(state + "/api.token");
  token.erase(token.find_last_not_of(" \n") + 1);
  client = std::make_unique<oma::HttpVmaClient>(vma->url(), std::chrono::seconds(60), token);
  std::map<std::string, std::string> both_up{{"oma-a", "up"}, {"oma-b", "up"}};
  ASSERT_TRUE(eventually([&] { return oma::test::tunnels_of(service->vma_health(b, vma_id)) == both_up; }))
      << service->vma_health(b, vma_id).dump() << "\n" << mk::test::log_tail(vma->log_path());

  // oma-a drained: the VM's volumes go to oma-b.
  ASSERT_EQ(a.api->post("/api/v1/nodes/oma-a/drain", "").status, 200);
  auto vm = prepare_vm("DC0/vm/DC0_H0_VM0", 4096, 16, 310);
  api = std::make_unique<oma::test::ApiClient>(b.process->port, oma::test::read_admin_token(service->admin_from));
  register_vm(vm.instance_uuid, vma_id);
  auto placed = b.api->post("/api/v1/vms/" + vm.instance_uuid + "/placement", "");
  ASSERT_EQ(placed.status, 200) << placed.raw;
  ASSERT_EQ(placed.body["node_id"], "oma-b") << placed.raw;

  int a_nbd = nbd_port_of(a), b_nbd = nbd_port_of(b);
  ASSERT_GT(b_nbd, 0);
  ASSERT_NO_FATAL_FAILURE(pass_matches(b, vm.instance_uuid, "full"));
  // At least one channel per disk: every disk's copy went through the tunnel.
  const int disks = static_cast<int>(vm.disks.size());
  int after_full = channels_to(b.sshd->log(), b_nbd);
  EXPECT_GE(after_full, disks) << "too few direct-tcpip channels to oma-b's NBD port " << b_nbd
                           << " in its sshd log: the VMA did not send NBD inside its tunnel to oma-b";

  write_block(vm.instance_uuid, vm.disks[0].key, 3, 320);
  write_block(vm.instance_uuid, vm.disks[1].key, 40, 321);
  ASSERT_NO_FATAL_FAILURE(pass_matches(b, vm.instance_uuid, "incremental"));
  EXPECT_GE(channels_to(b.sshd->log(), b_nbd) - after_full, disks)
      << "the incremental pass opened too few channels to oma-b's NBD port inside its tunnel";
  // Nothing went through oma-a's tunnel.
  EXPECT_EQ(channels_to(a.sshd->log(), a_nbd) + channels_to(a.sshd->log(), b_nbd), 0) << a.sshd->log();
  std::cout << "direct-tcpip channels to oma-b's NBD port " << b_nbd << ": " << after_full << " in the full pass, "
            << channels_to(b.sshd->log(), b_nbd) - after_full << " in the incremental pass\n";
}

}  // namespace
}  // namespace mk::vma::test
