// Placement checks shared by the SQLite tests (oma_tests) and the MariaDB ones
// (oma_nodes_tests): VMs and nodes made for them, and the concurrent-placement check.
#pragma once

#include <string>
#include <vector>

#include "oma/db/repositories.h"

namespace mk::oma::test {

// A node as the tests register it: loopback endpoints, `slots` data-volume slots.
NodeRecord test_node(const std::string& id, int64_t slots = 32);

// VM ids 4210a4c2-6b57-4d4b-9d8e-0000000000NN.
std::string placement_vm_id(int n);
// VM n with `disks` disks (repository_scenarios.h's records).
void add_placement_vm(Repositories& r, int n, int disks);
// Registers node `id` with `slots` data-volume slots and a lease of `lease_ms`.
void register_placement_node(Repositories& r, const std::string& id, int64_t slots, int64_t lease_ms = 600000);

// One thread per connection, each placing 8 one-disk VMs at once onto two nodes of 5
// slots: exactly 10 are placed, 6 wait, and no node holds more than its slots.
void place_concurrently_and_check(const std::vector<db::Database*>& connections);

}  // namespace mk::oma::test
