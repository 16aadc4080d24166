// NodeRepository's scenarios (repository_scenarios.h: run on SQLite and on a real
// MariaDB server): registration, renewal, release, expiry judged by the database's
// clock, the operator's drain, two nodes seeing each other.
#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "oma/errors.h"
#include "placement_checks.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

NodeRecord node(const std::string& id, int64_t slots = 32) {
  NodeRecord n = test_node(id, slots);
  n.cloudstack_vm_id = "vm-" + id;
  n.nbd_host = "10.0.0.1";
  n.disk_bytes = int64_t{1} << 40;
  return n;
}

NodeView view(NodeRepository& nodes, const std::string& id) {
  auto v = nodes.find_node(id);
  if (!v) throw Error("no node " + id);
  return *v;
}

// Waits until the database's clock has passed `t` (a lease's expiry): the database
// decides, whatever the test's own clock says.
void wait_for_database_time(NodeRepository& nodes, int64_t t) {
  for (int i = 0; i < 10000 && nodes.database_now() <= t; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  ASSERT_GT(nodes.database_now(), t);
}

void RegistersANodeAndRenewsItsLease(db::Database&, Repositories& r) {
  int64_t before = r.nodes.database_now();
  auto grant = r.nodes.register_node(node("oma-a"), 60000);
  int64_t after = r.nodes.database_now();
  ASSERT_TRUE(grant);
  EXPECT_EQ(grant->incarnation, 1);
  // The expiry is the database's now plus the lease.
  EXPECT_GE(grant->expires_at, before + 60000);
  EXPECT_LE(grant->expires_at, after + 60000);
  NodeView v = view(r.nodes, "oma-a");
  EXPECT_EQ(v.lease, LeaseState::Alive);
  EXPECT_EQ(v.node.cloudstack_vm_id, "vm-oma-a");
  EXPECT_EQ(v.node.nbd_host, "10.0.0.1");
  EXPECT_EQ(v.node.nbd_port, 10809);
  EXPECT_EQ(v.node.volume_slots, 32);
  EXPECT_EQ(v.node.disk_bytes, int64_t{1} << 40);
  EXPECT_EQ(v.node.state, NodeState::Active);
  EXPECT_EQ(v.node.lease_expires_at, grant->expires_at);

  auto renewed = r.nodes.renew("oma-a", grant->incarnation, 120000);
  ASSERT_TRUE(renewed);
  EXPECT_GE(*renewed, after + 120000);
  EXPECT_EQ(view(r.nodes, "oma-a").node.lease_expires_at, *renewed);
  r.nodes.set_api_url("oma-a", grant->incarnation, "https://10.0.0.1:8082");
  EXPECT_EQ(view(r.nodes, "oma-a").node.api_url, "https://10.0.0.1:8082");

  // A second process with the same node id is refused while the lease lives.
  EXPECT_FALSE(r.nodes.register_node(node("oma-a"), 60000));
  EXPECT_EQ(view(r.nodes, "oma-a").node.incarnation, 1);
}

void TwoNodesSeeEachOther(db::Database&, Repositories& r) {
  ASSERT_TRUE(r.nodes.register_node(node("oma-a", 32), 60000));
  ASSERT_TRUE(r.nodes.register_node(node("oma-b", 6), 60000));
  NodeList list = r.nodes.list_nodes();
  ASSERT_EQ(list.nodes.size(), 2u);
  EXPECT_EQ(list.nodes[0].node.node_id, "oma-a");
  EXPECT_EQ(list.nodes[1].node.node_id, "oma-b");
  EXPECT_EQ(list.nodes[1].node.volume_slots, 6);
  for (const auto& n : list.nodes) {
    EXPECT_EQ(n.lease, LeaseState::Alive) << n.node.node_id;
    EXPECT_GT(n.node.lease_expires_at, list.database_now);
  }
}

// A lease that ran out by the database's clock reads expired; its holder can neither
// renew nor release it; a new registration takes the id over with the next
// incarnation, and the old incarnation cannot touch the new lease.
void AnExpiredLeaseIsSeenExpiredAndCanBeTakenOver(db::Database&, Repositories& r) {
  ASSERT_TRUE(r.nodes.register_node(node("oma-b"), 60000));
  auto grant = r.nodes.register_node(node("oma-a"), 1);
  ASSERT_TRUE(grant);
  wait_for_database_time(r.nodes, grant->expires_at);
  NodeList list = r.nodes.list_nodes();
  ASSERT_EQ(list.nodes.size(), 2u);
  EXPECT_EQ(list.nodes[0].lease, LeaseState::Expired);
  EXPECT_LE(list.nodes[0].node.lease_expires_at, list.database_now);
  EXPECT_EQ(list.nodes[1].lease, LeaseState::Alive);

  EXPECT_FALSE(r.nodes.renew("oma-a", grant->incarnation, 60000));
  EXPECT_EQ(view(r.nodes, "oma-a").lease, LeaseState::Expired);

  auto again = r.nodes.register_node(node("oma-a", 16), 60000);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->incarnation, grant->incarnation + 1);
  EXPECT_EQ(view(r.nodes, "oma-a").node.volume_slots, 16);
  EXPECT_FALSE(r.nodes.renew("oma-a", grant->incarnation, 60000));
  EXPECT_FALSE(r.nodes.release("oma-a", grant->incarnation));
  EXPECT_EQ(view(r.nodes, "oma-a").lease, LeaseState::Alive);
  EXPECT_TRUE(r.nodes.renew("oma-a", again->incarnation, 60000));
}

void AReleasedLeaseEndsAtOnce(db::Database&, Repositories& r) {
  auto grant = r.nodes.register_node(node("oma-a"), 600000);
  ASSERT_TRUE(grant);
  EXPECT_TRUE(r.nodes.release("oma-a", grant->incarnation));
  NodeView v = view(r.nodes, "oma-a");
  EXPECT_EQ(v.lease, LeaseState::Released);
  ASSERT_TRUE(v.node.released_at);
  EXPECT_LE(v.node.lease_expires_at, *v.node.released_at);
  EXPECT_FALSE(r.nodes.renew("oma-a", grant->incarnation, 60000));
  EXPECT_FALSE(r.nodes.release("oma-a", grant->incarnation));
  // The next start of the node takes it again without waiting.
  auto again = r.nodes.register_node(node("oma-a"), 60000);
  ASSERT_TRUE(again);
  EXPECT_EQ(again->incarnation, 2);
  EXPECT_EQ(view(r.nodes, "oma-a").lease, LeaseState::Alive);
  EXPECT_FALSE(view(r.nodes, "oma-a").node.released_at);
}

void TheOperatorsDrainOutlivesRegistrations(db::Database&, Repositories& r) {
  auto grant = r.nodes.register_node(node("oma-a"), 60000);
  ASSERT_TRUE(grant);
  EXPECT_EQ(r.nodes.set_state("oma-a", NodeState::Draining).state, NodeState::Draining);
  ASSERT_TRUE(r.nodes.release("oma-a", grant->incarnation));
  ASSERT_TRUE(r.nodes.register_node(node("oma-a"), 60000));
  EXPECT_EQ(view(r.nodes, "oma-a").node.state, NodeState::Draining);
  EXPECT_EQ(r.nodes.set_state("oma-a", NodeState::Active).state, NodeState::Active);
  EXPECT_THROW(r.nodes.set_state("oma-z", NodeState::Draining), NotFound);
  EXPECT_FALSE(r.nodes.find_node("oma-z"));
}

void RefusesInvalidNodeIds(db::Database&, Repositories& r) {
  for (const std::string& bad : std::vector<std::string>{"", "-a", ".a", "A", "a b", "a/b", std::string(65, 'a'), std::string("a\0b", 3)}) {
    EXPECT_FALSE(valid_node_id(bad)) << bad;
    EXPECT_THROW(r.nodes.register_node(node(bad), 60000), UsageError) << bad;
  }
  EXPECT_TRUE(valid_node_id("oma-1.site_a"));
  EXPECT_TRUE(r.nodes.list_nodes().nodes.empty());
}

}  // namespace

Scenarios node_repository_scenarios() {
  return {{"NodeRegistersAndRenewsItsLease", RegistersANodeAndRenewsItsLease},
          {"TwoNodesSeeEachOther", TwoNodesSeeEachOther},
          {"AnExpiredLeaseIsSeenExpiredAndCanBeTakenOver", AnExpiredLeaseIsSeenExpiredAndCanBeTakenOver},
          {"AReleasedLeaseEndsAtOnce", AReleasedLeaseEndsAtOnce},
          {"TheOperatorsDrainOutlivesRegistrations", TheOperatorsDrainOutlivesRegistrations},
          {"RefusesInvalidNodeIds", RefusesInvalidNodeIds}};
}

}  // namespace mk::oma::test
