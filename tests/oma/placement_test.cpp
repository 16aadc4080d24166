// choose_node (nodes/placement.h): the pure placement decision over a snapshot of nodes.
#include "oma/nodes/placement.h"

#include <gtest/gtest.h>

namespace mk::oma {
namespace {

NodeCapacity cap(const std::string& id, int64_t slots, int64_t used, bool alive = true,
                 NodeState state = NodeState::Active) {
  NodeCapacity n;
  n.node_id = id;
  n.alive = alive;
  n.state = state;
  n.volume_slots = slots;
  n.slots_used = used;
  return n;
}

TEST(Placement, TheLeastLoadedNodeWithRoomTakesTheVm) {
  // a: 20 of 32 in use (62 %), b: 1 of 6 (17 %): b, although a has more free slots.
  auto d = choose_node({cap("a", 32, 20), cap("b", 6, 1)}, {2, 1 << 20});
  ASSERT_TRUE(d.node_id);
  EXPECT_EQ(*d.node_id, "b");
  EXPECT_EQ(d.limit, PlacementLimit::None);
  EXPECT_EQ(d.reason, "");
  // b full enough that the VM does not fit: a.
  d = choose_node({cap("a", 32, 20), cap("b", 6, 5)}, {2, 0});
  ASSERT_TRUE(d.node_id);
  EXPECT_EQ(*d.node_id, "a");
}

TEST(Placement, EqualLoadGoesToMoreFreeSlotsThenTheFirstId) {
  auto d = choose_node({cap("a", 6, 3), cap("b", 32, 16)}, {1, 0});  // both half full
  EXPECT_EQ(d.node_id.value_or(""), "b");
  d = choose_node({cap("b", 8, 0), cap("a", 8, 0)}, {1, 0});
  EXPECT_EQ(d.node_id.value_or(""), "a");
}

TEST(Placement, AVmsVolumesAreNeverSplitAcrossNodes) {
  // 6 free slots in all, but no node has the 4 the VM needs: it waits.
  auto d = choose_node({cap("a", 32, 29), cap("b", 32, 29)}, {4, 0});
  EXPECT_FALSE(d.node_id);
  EXPECT_EQ(d.limit, PlacementLimit::VolumeSlots);
  EXPECT_NE(d.reason.find("needs 4 data-volume slots"), std::string::npos) << d.reason;
  EXPECT_NE(d.reason.find("the most free on any active node is 3 (node a)"), std::string::npos) << d.reason;
}

TEST(Placement, ExpiredAndDrainingNodesTakeNoVms) {
  auto d = choose_node({cap("a", 32, 0, false), cap("b", 32, 0, true, NodeState::Draining), cap("c", 32, 30)}, {1, 0});
  EXPECT_EQ(d.node_id.value_or(""), "c");
  d = choose_node({cap("a", 32, 0, false), cap("b", 32, 0, true, NodeState::Draining)}, {1, 0});
  EXPECT_FALSE(d.node_id);
  EXPECT_EQ(d.limit, PlacementLimit::NoActiveNode);
  EXPECT_NE(d.reason.find("no node is running and active (2 known)"), std::string::npos) << d.reason;
  EXPECT_EQ(choose_node({}, {1, 0}).limit, PlacementLimit::NoActiveNode);
}

TEST(Placement, DiskSpaceLimitsANodeThatHasSlots) {
  NodeCapacity a = cap("a", 32, 0), b = cap("b", 32, 10);
  a.disk_bytes = 100;
  a.bytes_used = 60;
  b.disk_bytes = 0;  // not limited
  auto d = choose_node({a, b}, {2, 50});
  EXPECT_EQ(d.node_id.value_or(""), "b");
  d = choose_node({a}, {2, 50});
  EXPECT_FALSE(d.node_id);
  EXPECT_EQ(d.limit, PlacementLimit::DiskSpace);
  EXPECT_TRUE(choose_node({a}, {2, 40}).node_id);
}

TEST(Placement, AMoveToOneNodeSaysWhyThatNodeCannotTakeTheVm) {
  std::vector<NodeCapacity> nodes{cap("a", 32, 0), cap("b", 6, 5), cap("c", 32, 0, true, NodeState::Draining),
                                  cap("d", 32, 0, false)};
  EXPECT_EQ(choose_node(nodes, {1, 0}, "b").node_id.value_or(""), "b");
  auto d = choose_node(nodes, {2, 0}, "b");
  EXPECT_FALSE(d.node_id);
  EXPECT_EQ(d.limit, PlacementLimit::VolumeSlots);
  EXPECT_NE(d.reason.find("node b has 1 of 6 free"), std::string::npos) << d.reason;
  d = choose_node(nodes, {1, 0}, "c");
  EXPECT_FALSE(d.node_id);
  EXPECT_NE(d.reason.find("node c is draining"), std::string::npos) << d.reason;
  d = choose_node(nodes, {1, 0}, "d");
  EXPECT_NE(d.reason.find("node d is not running"), std::string::npos) << d.reason;
  EXPECT_FALSE(choose_node(nodes, {1, 0}, "z").node_id);
}

TEST(Placement, LimitNamesAreStable) {
  EXPECT_EQ(enum_names<PlacementLimit>(),
            (std::vector<std::string>{"none", "no_active_node", "volume_slots", "disk_space"}));
  EXPECT_EQ(enum_names<NodeState>(), (std::vector<std::string>{"active", "draining"}));
  EXPECT_EQ(enum_names<LeaseState>(), (std::vector<std::string>{"alive", "expired", "released"}));
}

}  // namespace
}  // namespace mk::oma
