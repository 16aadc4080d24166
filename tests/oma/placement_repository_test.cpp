// PlacementRepository's scenarios (repository_scenarios.h: run on SQLite and on a real
// MariaDB server): VMs placed whole on the least loaded node, the queue with its reasons,
// slots freed, drained and expired nodes, an operator's move; and concurrent placements
// from two connections never overfilling a node.
#include <gtest/gtest.h>

#include <thread>

#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "oma/errors.h"
#include "placement_checks.h"
#include "repository_scenarios.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

std::string vm_id(int n) { return placement_vm_id(n); }
void add_vm(Repositories& r, int n, int disks) { add_placement_vm(r, n, disks); }
void register_node(Repositories& r, const std::string& id, int64_t slots, int64_t lease_ms = 600000) {
  register_placement_node(r, id, slots, lease_ms);
}

NodeCapacity capacity(Repositories& r, const std::string& id) {
  for (const auto& n : r.placements.capacities()) {
    if (n.node_id == id) return n;
  }
  throw Error("no node " + id);
}

void PlacesEachVmWholeOnTheLeastLoadedNode(db::Database&, Repositories& r) {
  register_node(r, "oma-a", 4);
  register_node(r, "oma-b", 4);
  add_vm(r, 1, 2);
  add_vm(r, 2, 1);
  add_vm(r, 3, 1);
  PlacementRecord p1 = r.placements.place_vm(vm_id(1));
  EXPECT_EQ(p1.node_id.value_or(""), "oma-a");  // equal load: the first id
  EXPECT_EQ(p1.slots, 2);
  EXPECT_EQ(p1.disk_bytes, 3 * 1048576);  // 1 MiB + 2 MiB
  EXPECT_TRUE(p1.placed_at);
  EXPECT_EQ(r.placements.place_vm(vm_id(2)).node_id.value_or(""), "oma-b");
  EXPECT_EQ(r.placements.place_vm(vm_id(3)).node_id.value_or(""), "oma-b");  // 1/4 < 2/4
  // Placing again keeps the node.
  EXPECT_EQ(r.placements.place_vm(vm_id(1)).node_id.value_or(""), "oma-a");
  NodeCapacity a = capacity(r, "oma-a"), b = capacity(r, "oma-b");
  EXPECT_EQ(a.slots_used, 2);
  EXPECT_EQ(a.vms, 1);
  EXPECT_EQ(b.slots_used, 2);
  EXPECT_EQ(b.vms, 2);
  EXPECT_TRUE(a.alive);
  EXPECT_EQ(r.placements.list().size(), 3u);
  EXPECT_THROW(r.placements.place_vm(vm_id(99)), NotFound);
}

void AVmThatFitsNowhereWaitsAndIsPlacedWhenSlotsFree(db::Database&, Repositories& r) {
  register_node(r, "oma-a", 3);
  add_vm(r, 1, 2);
  add_vm(r, 2, 2);
  add_vm(r, 3, 1);
  ASSERT_TRUE(r.placements.place_vm(vm_id(1)).node_id);
  PlacementRecord w = r.placements.place_vm(vm_id(2));
  EXPECT_FALSE(w.node_id);
  EXPECT_EQ(w.limit, PlacementLimit::VolumeSlots);
  EXPECT_EQ(w.slots, 2);
  ASSERT_TRUE(w.waiting_reason);
  EXPECT_NE(w.waiting_reason->find("needs 2 data-volume slots"), std::string::npos) << *w.waiting_reason;
  EXPECT_NE(w.waiting_reason->find("is 1 (node oma-a)"), std::string::npos) << *w.waiting_reason;
  // A smaller VM queued later still fits in the slot left.
  EXPECT_EQ(r.placements.place_vm(vm_id(3)).node_id.value_or(""), "oma-a");
  auto list = r.placements.list();
  ASSERT_EQ(list.size(), 3u);
  EXPECT_EQ(list.back().vm_id, vm_id(2));  // the queue comes last
  EXPECT_TRUE(r.placements.place_waiting().empty());

  // VM 1 cut over: its volumes are detached, and the waiting VM takes their slots.
  EXPECT_TRUE(r.placements.release_vm(vm_id(1)));
  EXPECT_FALSE(r.placements.release_vm(vm_id(1)));
  PlacementRecord now = *r.placements.find(vm_id(2));
  EXPECT_EQ(now.node_id.value_or(""), "oma-a");
  EXPECT_EQ(now.limit, PlacementLimit::None);
  EXPECT_FALSE(now.waiting_reason);
  EXPECT_EQ(capacity(r, "oma-a").slots_used, 3);
}

void DrainedAndExpiredNodesTakeNoNewVms(db::Database&, Repositories& r) {
  register_node(r, "oma-a", 8);
  register_node(r, "oma-b", 8, 1);
  add_vm(r, 1, 1);
  add_vm(r, 2, 1);
  ASSERT_TRUE(r.placements.place_vm(vm_id(1)).node_id);  // on a or b: both alive or b just expired
  r.nodes.set_state("oma-a", NodeState::Draining);
  int64_t b_expires = r.nodes.find_node("oma-b")->node.lease_expires_at;
  for (int i = 0; i < 10000 && r.nodes.database_now() <= b_expires; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  PlacementRecord w = r.placements.place_vm(vm_id(2));
  EXPECT_FALSE(w.node_id);
  EXPECT_EQ(w.limit, PlacementLimit::NoActiveNode);
  EXPECT_FALSE(capacity(r, "oma-b").alive);
  // The placed VM stays on its node while that node drains (its volumes are there).
  EXPECT_TRUE(r.placements.find(vm_id(1))->node_id);
  r.nodes.set_state("oma-a", NodeState::Active);
  EXPECT_EQ(r.placements.place_waiting(), std::vector<std::string>{vm_id(2)});
  EXPECT_EQ(r.placements.find(vm_id(2))->node_id.value_or(""), "oma-a");
}

void AMoveIsCheckedAndReservesItsSlots(db::Database&, Repositories& r) {
  register_node(r, "oma-a", 4);
  register_node(r, "oma-b", 2);
  add_vm(r, 1, 2);
  add_vm(r, 2, 2);
  ASSERT_EQ(r.placements.place_vm(vm_id(1)).node_id.value_or(""), "oma-a");
  PlacementRecord m = r.placements.request_move(vm_id(1), "oma-b");
  EXPECT_EQ(m.node_id.value_or(""), "oma-a");  // it moves at its next pass
  EXPECT_EQ(m.requested_node_id.value_or(""), "oma-b");
  EXPECT_EQ(capacity(r, "oma-b").slots_used, 2);  // reserved
  // VM 2 cannot go to b now: a takes it, and a move of it to b is refused with why.
  ASSERT_EQ(r.placements.place_vm(vm_id(2)).node_id.value_or(""), "oma-a");
  try {
    r.placements.request_move(vm_id(2), "oma-b");
    ADD_FAILURE() << "moved a VM to a node without free slots";
  } catch (const Conflict& e) {
    EXPECT_NE(std::string(e.what()).find("node oma-b has 0 of 2 free"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(r.placements.find(vm_id(2))->requested_node_id);
  // Asking again for the same target does not count its own reservation against it.
  EXPECT_EQ(r.placements.request_move(vm_id(1), "oma-b").requested_node_id.value_or(""), "oma-b");
  // Moving back to where it is cancels the move.
  EXPECT_FALSE(r.placements.request_move(vm_id(1), "oma-a").requested_node_id);
  EXPECT_EQ(capacity(r, "oma-b").slots_used, 0);
  EXPECT_THROW(r.placements.request_move(vm_id(1), "oma-z"), NotFound);
  EXPECT_THROW(r.placements.request_move(vm_id(3), "oma-b"), NotFound);
}

void AVmHasOnePlacementRowAtMost(db::Database& database, Repositories& r) {
  register_node(r, "oma-a", 4);
  add_vm(r, 1, 1);
  ASSERT_TRUE(r.placements.place_vm(vm_id(1)).node_id);
  EXPECT_THROW(database.exec("INSERT INTO vm_placements (vm_id, node_id, slots, disk_bytes, waiting_limit, queued_at) "
                             "VALUES (?, 'oma-b', 1, 0, 'none', 0)",
                             {vm_id(1)}),
               db::ConstraintError);
  database.exec("DELETE FROM vm_contexts WHERE vm_id = ?", {vm_id(1)});
  EXPECT_FALSE(r.placements.find(vm_id(1)));  // it goes with its VM
}

}  // namespace

Scenarios placement_repository_scenarios() {
  return {{"PlacesEachVmWholeOnTheLeastLoadedNode", PlacesEachVmWholeOnTheLeastLoadedNode},
          {"AVmThatFitsNowhereWaitsAndIsPlacedWhenSlotsFree", AVmThatFitsNowhereWaitsAndIsPlacedWhenSlotsFree},
          {"DrainedAndExpiredNodesTakeNoNewVms", DrainedAndExpiredNodesTakeNoNewVms},
          {"AMoveIsCheckedAndReservesItsSlots", AMoveIsCheckedAndReservesItsSlots},
          {"AVmHasOnePlacementRowAtMost", AVmHasOnePlacementRowAtMost}};
}

namespace {

// Two connections to one SQLite file (two OMA processes would be the same), placing at
// once: 16 one-disk VMs, 10 slots: exactly 10 placed, no node over its capacity.
TEST(SqlitePlacement, ConcurrentPlacementsNeverOverfillANode) {
  mk::test::TempDir dir("mk-oma-placement");
  db::SqliteDatabase a(dir.file("oma.db"));
  db::migrate(a);
  db::SqliteDatabase b(dir.file("oma.db"));
  place_concurrently_and_check({&a, &b});
}

}  // namespace
}  // namespace mk::oma::test
