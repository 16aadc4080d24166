#include "placement_checks.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <thread>

#include "repository_scenarios.h"

namespace mk::oma::test {

std::string placement_vm_id(int n) { return fmt::format("4210a4c2-6b57-4d4b-9d8e-{:012d}", n); }

void add_placement_vm(Repositories& r, int n, int disks) {
  r.vms.add_vm(vm_record(placement_vm_id(n)), disk_records(disks));
}

NodeRecord test_node(const std::string& id, int64_t slots) {
  NodeRecord n;
  n.node_id = id;
  n.nbd_host = "127.0.0.1";
  n.nbd_port = 10809;
  n.ssh_host = "127.0.0.1";
  n.volume_slots = slots;
  return n;
}

void register_placement_node(Repositories& r, const std::string& id, int64_t slots, int64_t lease_ms) {
  ASSERT_TRUE(r.nodes.register_node(test_node(id, slots), lease_ms)) << id;
}

void place_concurrently_and_check(const std::vector<db::Database*>& connections) {
  Repositories first(*connections[0]);
  register_placement_node(first, "oma-a", 5);
  register_placement_node(first, "oma-b", 5);
  const int per_connection = 8;
  for (int i = 0; i < per_connection * static_cast<int>(connections.size()); ++i) add_placement_vm(first, i, 1);
  std::vector<std::thread> threads;
  std::vector<std::string> errors(connections.size());
  for (size_t c = 0; c < connections.size(); ++c) {
    threads.emplace_back([&, c] {
      Repositories r(*connections[c]);
      try {
        for (int i = 0; i < per_connection; ++i)
          r.placements.place_vm(placement_vm_id(static_cast<int>(c) * per_connection + i));
      } catch (const std::exception& e) {
        errors[c] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_EQ(e, "");
  int placed = 0, waiting = 0;
  for (const auto& p : first.placements.list()) (p.node_id ? placed : waiting)++;
  EXPECT_EQ(placed, 10);
  EXPECT_EQ(waiting, 6);
  for (const auto& n : first.placements.capacities()) EXPECT_EQ(n.slots_used, 5) << n.node_id;
}

}  // namespace mk::oma::test
