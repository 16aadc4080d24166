// The OMA's database over a real 3-node MariaDB Galera cluster (issue 18; label scale),
// started by the test on loopback ports (galera_cluster.h).
//
//  * Galera is optimistic: a transaction on one node that changed rows another node
//    changed and committed first fails at COMMIT with a deadlock error (certification
//    failure). The conflict is provoked for real on two nodes, and the OMA's
//    transaction() runs the whole transaction again: the result is the one a single
//    server gives, and the retry is counted.
//  * Concurrent placements from two OMA connections on two Galera nodes never overfill
//    a node (the same check as on one MariaDB server: placement_checks.h), and lease
//    renewals, placement claims and takeovers from several nodes at once all commit.
//  * A connection whose Galera node stops carries on on the next node of its URL; the
//    node restarted rejoins and catches up (IST).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <thread>

#include "galera_cluster.h"
#include "oma/db/migrations.h"
#include "oma/db/repositories.h"
#include "placement_checks.h"

namespace mk::oma::test {
namespace {

TEST(Galera, AConflictingCommitOnAnotherNodeIsRetriedAsAWholeTransaction) {
  GaleraCluster cluster;
  cluster.create_database("oma_conflict");
  auto one = db::open_database(cluster.url("oma_conflict", 0, false));
  auto two = db::open_database(cluster.url("oma_conflict", 1, false));
  one->exec("CREATE TABLE counter (id BIGINT PRIMARY KEY, v BIGINT NOT NULL)");
  one->exec("INSERT INTO counter (id, v) VALUES (1, 0)");
  ASSERT_EQ(two->query("SELECT v FROM counter WHERE id = 1").at(0).i64(0), 0);  // replicated (causal read)

  // Node 0's transaction reads and writes the row; before it commits, node 1 commits its
  // own change of the same row. Node 0's commit then fails certification: only running
  // the whole transaction again (reading the row afresh) gives the right sum.
  int attempts = 0;
  one->transaction([&] {
    ++attempts;
    int64_t v = one->query("SELECT v FROM counter WHERE id = 1").at(0).i64(0);
    one->exec("UPDATE counter SET v = ? WHERE id = 1", {v + 1});
    if (attempts == 1) two->exec("UPDATE counter SET v = v + 10 WHERE id = 1");
  });
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(one->retries(), 1);
  EXPECT_EQ(one->query("SELECT v FROM counter WHERE id = 1").at(0).i64(0), 11);
  EXPECT_EQ(two->query("SELECT v FROM counter WHERE id = 1").at(0).i64(0), 11);

  // A transaction that keeps conflicting gives up after kTransactionAttempts, naming why.
  attempts = 0;
  try {
    one->transaction([&] {
      ++attempts;
      one->exec("UPDATE counter SET v = v + 1 WHERE id = 1");
      two->exec("UPDATE counter SET v = v + 100 WHERE id = 1");
    });
    ADD_FAILURE() << "a transaction that always conflicts committed";
  } catch (const db::RetryableError& e) {
    EXPECT_NE(std::string(e.what()).find("aborted 8 times in a row"), std::string::npos) << e.what();
  }
  EXPECT_EQ(attempts, db::kTransactionAttempts);
  EXPECT_EQ(two->query("SELECT v FROM counter WHERE id = 1").at(0).i64(0), 11 + 100 * db::kTransactionAttempts);
}

TEST(Galera, ConcurrentClaimsFromTwoNodesCommitAndNeverOverfillANode) {
  GaleraCluster cluster;
  cluster.create_database("oma_claims");
  auto a = db::open_database(cluster.url("oma_claims", 0, false));
  auto b = db::open_database(cluster.url("oma_claims", 1, false));
  db::migrate(*a);
  place_concurrently_and_check({a.get(), b.get()});

  // Lease renewals of two nodes and registrations of new ones, at once from three Galera
  // nodes, many times: every one commits (each renewal also reads what it wrote).
  auto c = db::open_database(cluster.url("oma_claims", 2, false));
  Repositories ra(*a), rb(*b), rc(*c);
  auto ga = ra.nodes.register_node(test_node("oma-ra"), 600000);
  auto gb = rb.nodes.register_node(test_node("oma-rb"), 600000);
  ASSERT_TRUE(ga && gb);
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    try {
      for (int i = 0; i < 60; ++i)
        if (!ra.nodes.renew("oma-ra", ga->incarnation, 600000)) errors[0] = "oma-ra lost its lease";
    } catch (const std::exception& e) { errors[0] = e.what(); }
  });
  threads.emplace_back([&] {
    try {
      for (int i = 0; i < 60; ++i)
        if (!rb.nodes.renew("oma-rb", gb->incarnation, 600000)) errors[1] = "oma-rb lost its lease";
    } catch (const std::exception& e) { errors[1] = e.what(); }
  });
  threads.emplace_back([&] {
    try {
      for (int i = 0; i < 20; ++i) {
        if (!rc.nodes.register_node(test_node(fmt::format("oma-n{}", i)), 600000)) errors[2] = "not registered";
        rc.placements.capacities();
      }
    } catch (const std::exception& e) { errors[2] = e.what(); }
  });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  EXPECT_EQ(ra.nodes.list_nodes().nodes.size(), 2u + 2u + 20u);
  std::printf("Galera: transactions run again after a conflict: node0 %lld, node1 %lld, node2 %lld\n",
              static_cast<long long>(a->retries()), static_cast<long long>(b->retries()),
              static_cast<long long>(c->retries()));
}

TEST(Galera, AConnectionWhoseNodeStopsCarriesOnOnTheNextNodeAndTheNodeRejoins) {
  GaleraCluster cluster;
  cluster.create_database("oma_stop");
  auto db = db::open_database(cluster.url("oma_stop", 2));  // node 2 first, then 0 and 1
  db::migrate(*db);
  Repositories r(*db);
  register_placement_node(r, "oma-a", 32);
  add_placement_vm(r, 1, 2);
  cluster.stop(2);
  // The connection died between statements: the next transaction reconnects to node 0.
  add_placement_vm(r, 2, 2);
  r.placements.place_vm(placement_vm_id(1));
  auto other = db::open_database(cluster.url("oma_stop", 1, false));
  EXPECT_EQ(other->query("SELECT COUNT(*) FROM vm_placements").at(0).i64(0), 1);
  EXPECT_EQ(cluster.status(0, "WSREP_CLUSTER_SIZE"), "2");

  cluster.start(2);
  EXPECT_EQ(cluster.status(2, "WSREP_CLUSTER_SIZE"), "3");
  // What was written while it was away reached it.
  auto on2 = db::open_database(cluster.url("oma_stop", 2, false));
  EXPECT_EQ(on2->query("SELECT COUNT(*) FROM vm_contexts").at(0).i64(0), 2);
  EXPECT_EQ(on2->query("SELECT COUNT(*) FROM vm_placements").at(0).i64(0), 1);
  r.placements.place_vm(placement_vm_id(2));
  EXPECT_EQ(on2->query("SELECT COUNT(*) FROM vm_placements").at(0).i64(0), 2);
}

}  // namespace
}  // namespace mk::oma::test
