// TunnelSet (the VMA's tunnels to several OMA nodes) without a network: which tunnels it
// holds for a node list, what ssh is told for each node, and, with NBD inside SSH, that
// a pass's NBD target goes through the forward of the node that serves it. The tunnels
// themselves, against real sshd servers, are tests/tunnel/service_nodes_test.cpp's.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/error.h"
#include "support/temp_dir.h"
#include "vma/tunnel/tunnel_set.h"

namespace mk::vma {
namespace {

protocol::ServiceNode node(const std::string& id, const std::string& address, int nbd_port) {
  return {id, "10.0.0." + std::to_string(nbd_port % 100), 22,
          "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3i1Xg0cO2zV9yv6mJ0d8m1Q3m6p5K1n2Y3r4s5t6u", address,
          "10.0.1." + std::to_string(nbd_port % 100), nbd_port};
}

std::string arg_after(const std::vector<std::string>& argv, const std::string& flag) {
  auto it = std::find(argv.begin(), argv.end(), flag);
  return it == argv.end() || it + 1 == argv.end() ? "" : *(it + 1);
}

TunnelConfig base(const mk::test::TempDir& dir) {
  TunnelConfig c;
  c.ssh_host = "oma.example";
  c.identity_file = dir.file("id");
  c.known_hosts_file = dir.file("known_hosts");
  c.log_path = dir.file("ssh-tunnel.log");
  c.remote_port = 9085;
  c.ssh_binary = "/bin/false";  // never connects: only the set's bookkeeping is tested
  c.backoff_initial = std::chrono::milliseconds(50);
  return c;
}

TEST(TunnelSet, OneTunnelPerNodeEachToItsNodeWithTheSameReversePort) {
  mk::test::TempDir dir("mk-tunnel-set");
  std::vector<std::vector<protocol::ServiceNode>> persisted;
  TunnelSet set(base(dir), /*nbd_over_ssh=*/true, [&](const auto& nodes) { persisted.push_back(nodes); });
  set.start(8081, {node("oma-a", "127.0.0.1", 10809), node("oma-b", "127.0.0.3", 10810)});
  auto configs = set.configs();
  ASSERT_EQ(configs.size(), 2u);
  for (const auto& c : configs) {
    auto argv = ssh_command(c);
    bool a = c.host_key_alias == "migratekit-oma-oma-a";
    EXPECT_EQ(argv.back(), a ? "10.0.0.9" : "10.0.0.10");
    EXPECT_EQ(arg_after(argv, "-R"), std::string(a ? "127.0.0.1" : "127.0.0.3") + ":9085:127.0.0.1:8081");
    EXPECT_EQ(arg_after(argv, "-L"),
              "127.0.0.1:" + std::to_string(*c.nbd_local_port) + ":127.0.0.1:" + (a ? "10809" : "10810"));
    EXPECT_NE(std::find(argv.begin(), argv.end(), "HostKeyAlias=" + c.host_key_alias), argv.end());
    EXPECT_EQ(c.log_path, dir.file(a ? "ssh-tunnel-oma-a.log" : "ssh-tunnel-oma-b.log"));
  }
  // A pass's NBD target goes through the forward of the node that serves it.
  int to_b = set.nbd_local_port({"10.0.1.10", 10810, protocol::NbdTls::Psk});
  for (const auto& c : configs)
    if (c.nbd_remote_port == 10810) EXPECT_EQ(to_b, *c.nbd_local_port);
  EXPECT_NE(to_b, set.nbd_local_port({"10.0.1.9", 10809, protocol::NbdTls::Psk}));
  EXPECT_THROW(set.nbd_local_port({"10.0.1.99", 10809, protocol::NbdTls::Psk}), mk::Error);

  // oma-b leaves, oma-c joins: stored first, oma-a's tunnel untouched.
  auto tunnels = set.apply({node("oma-a", "127.0.0.1", 10809), node("oma-c", "127.0.0.4", 10811)});
  ASSERT_EQ(tunnels.size(), 2u);
  EXPECT_EQ(tunnels[0].node_id, "oma-a");
  EXPECT_EQ(tunnels[1].node_id, "oma-c");
  ASSERT_EQ(persisted.size(), 2u);
  EXPECT_EQ(persisted[1][1].node_id, "oma-c");
  EXPECT_THROW(set.nbd_local_port({"10.0.1.10", 10810, protocol::NbdTls::Psk}), mk::Error);
  EXPECT_THROW(set.apply({}), mk::UsageError);
  // Every tunnel in one: not up while one is not (none connects here), naming the node.
  auto all = set.combined();
  EXPECT_NE(all.state, protocol::TunnelState::Up);
  set.stop();
  EXPECT_TRUE(set.tunnels().empty());
}

TEST(TunnelSet, ASingleOmaIsOneTunnelAsBeforeNodes) {
  mk::test::TempDir dir("mk-tunnel-set");
  TunnelSet set(base(dir), /*nbd_over_ssh=*/true);
  set.start(8081, {});
  auto configs = set.configs();
  ASSERT_EQ(configs.size(), 1u);
  EXPECT_EQ(configs[0].host_key_alias, "migratekit-oma");
  EXPECT_EQ(configs[0].log_path, dir.file("ssh-tunnel.log"));
  EXPECT_EQ(arg_after(ssh_command(configs[0]), "-R"), "127.0.0.1:9085:127.0.0.1:8081");
  EXPECT_EQ(set.tunnels().at(0).node_id, "");
  // Its one forward, whatever address the OMA names for its NBD server.
  EXPECT_EQ(set.nbd_local_port({"oma.example", 10809, protocol::NbdTls::Psk}), *configs[0].nbd_local_port);
  // The OMA becomes a service of nodes: its tunnel gives way to the nodes'.
  set.apply({node("oma-a", "127.0.0.1", 10809)});
  ASSERT_EQ(set.tunnels().size(), 1u);
  EXPECT_EQ(set.tunnels().at(0).node_id, "oma-a");
}

}  // namespace
}  // namespace mk::vma
