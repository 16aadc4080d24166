// A VMA paired with a service of several OMA nodes (issue 18, item 4; label scale):
// real OpenSSH sshd per node on loopback, real `oma` processes over one real MariaDB,
// and the real `vma run` (its vCenter unreachable: only its API and tunnels matter here).
//
// Several nodes share this machine, so each takes the VMA's reverse forward on its own
// loopback address (--tunnel-address 127.0.0.N, sshd GatewayPorts clientspecified):
// the VMA's one tunnel port is the same on every node, as on separate machines.
//
//  * Pairing with a bundle from one node: the bundle names both live nodes; the VMA holds
//    a tunnel to each, once the other node's sshd takes its key (approved on one node,
//    written by every node from the database).
//  * A control call (the VMA's health) made from either node reaches the VMA, and its
//    health lists each node's tunnel.
//  * A third node registers later: the VMA is told by the nodes it reaches and holds a
//    tunnel to it; the new node calls it.
//  * A node whose lease expires (SIGKILLed; its sshd stays up) is dropped: the VMA's ssh
//    to it ends.
//  * Revoked on one node, the VMA loses every tunnel: every node drops its key and ends
//    its session.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include "service_nodes.h"

namespace mk::oma::test {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

struct VmaRun {
  mk::test::TempDir dir{"mk-vma-nodes"};
  std::string state = dir.file("state");
  Subprocess process;
  ~VmaRun() {
    if (process.pid() > 0 && process.running()) {
      process.signal(SIGTERM);
      process.wait();
    }
  }
};

TEST(ServiceNodes, AVmaHoldsATunnelToEveryLiveNodeAndLosesThemAllWhenRevoked) {
  Service s;
  Node& a = s.start("oma-a", "127.0.0.2");
  Node& b = s.start("oma-b", "127.0.0.3");

  // The bundle names the service: both live nodes, each with its pinned host key.
  json bundle = pairing_bundle(a);
  ASSERT_EQ(bundle["nodes"].size(), 2u) << bundle.dump();
  EXPECT_EQ(bundle["nodes"][1]["node_id"], "oma-b");
  EXPECT_EQ(bundle["nodes"][1]["tunnel_address"], "127.0.0.3");
  EXPECT_EQ(bundle["nodes"][1]["ssh_port"], b.sshd->port());
  EXPECT_NE(b.sshd->host_public_key().find(bundle["nodes"][1]["ssh_host_key"].get<std::string>()), std::string::npos);

  VmaRun vma;
  // Approved on oma-a: oma-b's sshd takes the key too (its own file, from the database).
  std::string id = pair_vma(s, a, bundle, VMA_BIN, vma.state);
  json paired = json::parse(read_file_or_empty(vma.state + "/pairing.json"));
  ASSERT_EQ(paired["nodes"].size(), 2u);
  EXPECT_NE(read_file_or_empty(b.keys).find("permitlisten=\"127.0.0.3:"), std::string::npos) << read_file_or_empty(b.keys);

  std::string pw = vma.dir.file("vc.pw");
  std::ofstream(pw) << "unused\n";
  std::filesystem::permissions(pw, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  SpawnOptions so;
  so.stdout_path = vma.dir.file("vma.log");
  so.stderr_path = so.stdout_path;
  vma.process = Subprocess::spawn({VMA_BIN, "run", "--state-dir", vma.state, "--vcenter", "https://127.0.0.1:1/sdk",
                                   "--vcenter-user", "u", "--vcenter-password-file", pw, "--listen", "127.0.0.1:0"},
                                  so);

  // A control call from either node reaches the VMA; its health lists both tunnels up.
  auto both_up = [&](Node& n, std::map<std::string, std::string> want) {
    return eventually([&] { return tunnels_of(s.vma_health(n, id)) == want; }, 60);
  };
  std::map<std::string, std::string> ab{{"oma-a", "up"}, {"oma-b", "up"}};
  ASSERT_TRUE(both_up(a, ab)) << s.vma_health(a, id).dump() << "\n" << mk::test::log_tail(vma.dir.file("vma.log"));
  ASSERT_TRUE(both_up(b, ab)) << s.vma_health(b, id).dump();
  json via_b = s.vma_health(b, id);
  EXPECT_EQ(via_b["tunnel"]["state"], "up") << via_b.dump();

  // A third node registers: the VMA is told by the nodes it reaches, and holds a tunnel
  // to it; the new node calls it on its own address.
  auto c_started = Clock::now();
  Node& c = s.start("oma-c", "127.0.0.4");
  std::map<std::string, std::string> abc{{"oma-a", "up"}, {"oma-b", "up"}, {"oma-c", "up"}};
  ASSERT_TRUE(both_up(a, abc)) << s.vma_health(a, id).dump() << "\n" << mk::test::log_tail(c.log);
  ASSERT_TRUE(both_up(c, abc)) << s.vma_health(c, id).dump();
  auto ms = [](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
  };
  std::printf("figure: oma-c started -> the VMA called through its tunnel on oma-c: %lld ms\n",
              static_cast<long long>(ms(c_started)));
  EXPECT_NE(read_file_or_empty(vma.state + "/pairing.json").find("oma-c"), std::string::npos);
  // On the VMA, `vma status` lists each node's tunnel (degraded: its vCenter is not there).
  std::string status;
  EXPECT_EQ(run_capture({VMA_BIN, "status", "--state-dir", vma.state}, status), 1) << status;
  for (const char* n : {"oma-a", "oma-b", "oma-c"})
    EXPECT_NE(status.find(std::string(n)), std::string::npos) << status;
  EXPECT_NE(status.find("SSH tunnels: 3"), std::string::npos) << status;

  // oma-b dies (its sshd stays up): once its lease expired the VMA drops its tunnel.
  ASSERT_FALSE(b.sshd->session_pids().empty());
  b.process->process.signal(SIGKILL);
  b.process->process.wait();
  auto b_killed = Clock::now();
  std::map<std::string, std::string> ac{{"oma-a", "up"}, {"oma-c", "up"}};
  ASSERT_TRUE(both_up(a, ac)) << s.vma_health(a, id).dump();
  EXPECT_TRUE(eventually([&] { return b.sshd->session_pids().empty(); }, 30))
      << "the VMA still holds an SSH session to the dead node oma-b";
  std::printf("figure: oma-b SIGKILLed (lease 3 s) -> the VMA's tunnel to it ended: %lld ms\n",
              static_cast<long long>(ms(b_killed)));

  // Revoked on oma-a: every node drops the key and ends its session.
  auto revoked = Clock::now();
  auto r = a.api->post("/api/v1/vmas/" + id + "/revoke", "");
  ASSERT_EQ(r.status, 200) << r.raw;
  for (Node* n : {&a, &c}) {
    EXPECT_TRUE(eventually([&] { return read_file_or_empty(n->keys).find("vma-" + id) == std::string::npos; }, 30)) << n->id;
    EXPECT_TRUE(eventually([&] { return n->sshd->session_pids().empty(); }, 30))
        << n->id << " still has the revoked VMA's session";
  }
  std::printf("figure: revoked on oma-a -> no session left on oma-a nor oma-c: %lld ms\n",
              static_cast<long long>(ms(revoked)));
  // And it stays so: the VMA keeps trying, every node refuses it.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  for (Node* n : {&a, &c}) {
    EXPECT_TRUE(n->sshd->session_pids().empty()) << n->id;
    auto h = n->api->get("/api/v1/vmas/" + id + "/health");
    EXPECT_EQ(h.body["tunnel"]["state"], "down") << n->id << ": " << h.raw;
  }
}

}  // namespace
}  // namespace mk::oma::test
