// Several OMA nodes over one real MariaDB server (issue 18; label scale): two
// connections judging leases by the database's clock, concurrent placements from two
// connections, and the real `oma` binary as two nodes that register, see each other,
// release their lease when stopped and see a SIGKILLed node's lease expire.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <optional>
#include <thread>

#include "mariadb_server.h"
#include "oma/db/migrations.h"
#include "oma/db/repositories.h"
#include "oma_process.h"
#include "oma_service.h"
#include "placement_checks.h"
#include "support/net.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

namespace {

NodeRecord node(const std::string& id) { return test_node(id); }

LeaseState lease_of(NodeRepository& nodes, const std::string& id) { return nodes.find_node(id).value().lease; }

// Two processes' connections to one database: each registers, each sees the other.
// Leases are judged by the database's clock and by nothing else: a session whose
// database clock runs a day ahead (SET timestamp, the server's own notion of now for
// that session) sees both leases expired and may take a node over, and the node it
// took cannot renew any more: exactly what a node far behind would see.
TEST(MariadbNodes, TwoConnectionsSeeEachOtherAndTheDatabaseClockDecides) {
  MariadbServer server;
  std::string url = server.create_database("oma_nodes");
  auto a = db::open_database(url), b = db::open_database(url);
  db::migrate(*a);
  Repositories ra(*a), rb(*b);
  auto grant_a = ra.nodes.register_node(node("oma-a"), 60000);
  ASSERT_TRUE(grant_a);
  ASSERT_TRUE(rb.nodes.register_node(node("oma-b"), 60000));
  for (auto* r : {&ra, &rb}) {
    NodeList list = r->nodes.list_nodes();
    ASSERT_EQ(list.nodes.size(), 2u);
    for (const auto& n : list.nodes) EXPECT_EQ(n.lease, LeaseState::Alive) << n.node.node_id;
  }
  EXPECT_FALSE(rb.nodes.register_node(node("oma-a"), 60000));  // alive: not b's to take

  b->exec("SET timestamp = UNIX_TIMESTAMP() + 86400");
  EXPECT_GT(rb.nodes.database_now(), ra.nodes.database_now() + 86000000);
  EXPECT_EQ(lease_of(rb.nodes, "oma-a"), LeaseState::Expired);
  EXPECT_EQ(lease_of(rb.nodes, "oma-b"), LeaseState::Expired);
  EXPECT_EQ(lease_of(ra.nodes, "oma-a"), LeaseState::Alive);
  auto taken = rb.nodes.register_node(node("oma-a"), 60000);
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->incarnation, grant_a->incarnation + 1);
  EXPECT_FALSE(ra.nodes.renew("oma-a", grant_a->incarnation, 60000));  // fenced by its incarnation
  b->exec("SET timestamp = DEFAULT");
  EXPECT_LT(rb.nodes.database_now(), ra.nodes.database_now() + 60000);
}

TEST(MariadbNodes, ConcurrentPlacementsNeverOverfillANode) {
  MariadbServer server;
  std::string url = server.create_database("oma_placement");
  auto a = db::open_database(url), b = db::open_database(url);
  db::migrate(*a);
  place_concurrently_and_check({a.get(), b.get()});
}

// One node's data directory; the secrets key is the first node's (every node of a
// service shares it: the values sealed in the database are sealed with it).
struct Node {
  Node(mk::test::TempDir& dir, const std::string& id, const std::string& url, const std::string& key_from)
      : id(id), data(dir.file(id)), log(dir.file(id + ".log")), url(url) {
    std::filesystem::create_directories(data);
    if (!key_from.empty())
      std::filesystem::copy_file(key_from + "/secrets.key", data + "/secrets.key",
                                 std::filesystem::copy_options::overwrite_existing);
  }
  void start() {
    process.emplace(data, "http://127.0.0.1:1", log,
                    std::vector<std::string>{"--database", url, "--node-id", id, "--node-volume-slots", "6",
                                             "--node-lease-ms", "3000"});
  }
  std::string id, data, log, url;
  std::optional<OmaProcess> process;
};

nlohmann::json node_in(ApiClient& api, const std::string& id) {
  HttpReply r = api.get("/api/v1/nodes");
  if (r.status != 200) throw Error("GET /api/v1/nodes: " + r.raw);
  for (const auto& n : r.body["nodes"]) {
    if (n["node_id"] == id) return n;
  }
  return nullptr;
}

// Polls GET /api/v1/nodes until node `id`'s lease reads `lease`; returns the node. The
// deadline only stops a hung test.
nlohmann::json wait_for_lease(ApiClient& api, const std::string& id, const std::string& lease) {
  nlohmann::json n;
  for (int i = 0; i < 600; ++i) {
    n = node_in(api, id);
    if (!n.is_null() && n["lease"] == lease) return n;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ADD_FAILURE() << "node " << id << " never read " << lease << ": " << n.dump();
  return n;
}

TEST(OmaNodes, TwoOmaProcessesShareOneDatabaseAndJudgeEachOthersLeases) {
  MariadbServer server;
  std::string url = server.create_database("oma_service");
  mk::test::TempDir dir("mk-oma-nodes");
  Node a(dir, "oma-a", url, "");
  a.start();
  Node b(dir, "oma-b", url, a.data);
  b.start();
  // Any node serves the API for the whole service: same data, same tokens.
  std::string token = read_admin_token(a.data);
  ApiClient api_a(a.process->port, token), api_b(b.process->port, token);

  HttpReply list = api_b.get("/api/v1/nodes");
  ASSERT_EQ(list.status, 200) << list.raw;
  EXPECT_EQ(list.body["this_node"], "oma-b");
  ASSERT_EQ(list.body["nodes"].size(), 2u) << list.raw;
  // (A node too slow to renew in time on a loaded machine loses its lease and
  // registers again: incarnations are compared, never counted.)
  for (const auto& n : list.body["nodes"]) {
    EXPECT_EQ(wait_for_lease(api_b, n["node_id"], "alive")["node_id"], n["node_id"]);
    EXPECT_GE(n["incarnation"].get<int>(), 1);
    EXPECT_EQ(n["volume_slots"], 6);
    EXPECT_EQ(n["state"], "active");
    EXPECT_EQ(n["nbd_host"], "127.0.0.1");
    EXPECT_GT(n["nbd_port"].get<int>(), 0);
  }
  EXPECT_EQ(node_in(api_a, "oma-a")["api_url"], fmt::format("http://127.0.0.1:{}", a.process->port));
  EXPECT_EQ(api_a.get("/api/v1/nodes").body["this_node"], "oma-a");

  // An operator drains b through a; b's API says so too.
  HttpReply drained = api_a.post("/api/v1/nodes/oma-b/drain", "");
  ASSERT_EQ(drained.status, 200) << drained.raw;
  EXPECT_EQ(drained.body["state"], "draining");
  EXPECT_EQ(node_in(api_b, "oma-b")["state"], "draining");
  EXPECT_EQ(api_a.post("/api/v1/nodes/oma-z/drain", "").status, 404);
  EXPECT_EQ(api_a.post("/api/v1/nodes/oma-b/activate", "").body["state"], "active");

  // b stops cleanly: its lease is released at once (no waiting for it to run out).
  int b_before = node_in(api_a, "oma-b")["incarnation"];
  b.process->process.stop(std::chrono::milliseconds(10000));
  EXPECT_EQ(node_in(api_a, "oma-b")["lease"], "released");
  b.start();
  EXPECT_GT(wait_for_lease(api_a, "oma-b", "alive")["incarnation"].get<int>(), b_before);

  // a dies (SIGKILL: no release): b sees its lease run out by the database's clock.
  ApiClient api_b2(b.process->port, token);
  int a_before = node_in(api_b2, "oma-a")["incarnation"];
  a.process->process.signal(SIGKILL);
  a.process->process.wait();
  nlohmann::json dead = wait_for_lease(api_b2, "oma-a", "expired");
  EXPECT_LE(dead["lease_expires_in_ms"].get<int64_t>(), 0);  // expired: at or past its expiry
  EXPECT_EQ(wait_for_lease(api_b2, "oma-b", "alive")["node_id"], "oma-b");  // b renews its own meanwhile

  // a comes back: it takes its node id again, as the next incarnation.
  a.start();
  EXPECT_GT(wait_for_lease(api_b2, "oma-a", "alive")["incarnation"].get<int>(), a_before);
}

// The lease renews on a connection of its own: a transaction that keeps the OMA's shared
// connection busy for three leases (a long migration or listing) neither stops the
// renewals nor costs the node its lease (on the shared connection the renewer waited
// behind it, the database expired the lease and the node registered again).
TEST(MariadbNodes, TheLeaseIsRenewedWhileTheOmasConnectionIsInALongTransaction) {
  MariadbServer server;
  mk::test::TempDir dir("mk-oma-lease");
  std::filesystem::create_directories(dir.file("data"));
  OmaConfig c = test_config(dir.file("data"), "http://127.0.0.1:1");
  c.database_url = server.create_database("oma_lease");
  c.node.node_id = "oma-a";
  c.node.lease_ms = 900;
  Oma oma(c);
  oma.start();
  NodeLease* lease = oma.node_lease();
  ASSERT_NE(lease, nullptr);
  ASSERT_TRUE(lease->held());
  const NodeLeaseGrant before = lease->grant();
  NodeLeaseGrant during;
  oma.repos().database.transaction([&] {
    oma.repos().nodes.list_nodes();
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * c.node.lease_ms));
    during = lease->grant();
  });
  EXPECT_GT(during.expires_at, before.expires_at + c.node.lease_ms) << "not renewed during the transaction";
  EXPECT_EQ(during.incarnation, before.incarnation);
  EXPECT_EQ(lease->grant().incarnation, before.incarnation);
  EXPECT_TRUE(lease->held());
  oma.stop();
}

// A single OMA (SQLite, no node id) has no node registry: the list is empty.
TEST(OmaNodes, ASingleOmaWithoutNodeIdListsNoNodes) {
  mk::test::TempDir dir("mk-oma-single");
  OmaProcess oma(dir.file("data"), "http://127.0.0.1:1", dir.file("oma.log"));
  ApiClient api(oma.port, read_admin_token(dir.file("data")));
  HttpReply r = api.get("/api/v1/nodes");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_TRUE(r.body["this_node"].is_null());
  EXPECT_TRUE(r.body["nodes"].empty());
  EXPECT_TRUE(r.body["queue"].empty());
}

}  // namespace
}  // namespace mk::oma::test
