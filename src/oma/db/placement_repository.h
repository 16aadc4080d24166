// PlacementRepository: which OMA node holds each VM's volumes (vm_placements), and the
// queue of VMs that fit on no node yet.
//
// A VM has at most one placement row (its primary key), so no VM is ever owned by two
// nodes: placed (node_id) or waiting (node_id NULL, with the limit and reason that keep
// it waiting, in the order it was queued). place_vm() decides with the pure choose_node()
// (nodes/placement.h) over a snapshot read in the same transaction as the write, after
// updating the one placement_lock row first: every placement transaction takes that
// row's lock, so two (on two nodes) never count the same free slot. (On a Galera
// cluster, two such transactions on different members conflict at commit and one fails
// with a deadlock error: its caller tries again.)
//
// A VM needs one data-volume slot per disk (vm_disks, VmRepository's; read here only)
// and its disks' bytes. A placed VM stays where it is, also on a node being drained:
// its volumes are there until its next pass moves them (requested_node_id records an
// operator's move until then). release_vm() frees its slots (its volumes were detached:
// the VM was cut over or removed) and places waiting VMs into them.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "oma/db/database.h"
#include "oma/nodes/placement.h"

namespace mk::oma {

// Times in ms since the Unix epoch, on the database's clock.
struct PlacementRecord {
  std::string vm_id;
  std::optional<std::string> node_id;  // nullopt: waiting in the queue
  int64_t slots = 0;                   // data-volume slots it takes (or needs)
  int64_t disk_bytes = 0;
  std::optional<std::string> waiting_reason;
  std::optional<std::string> requested_node_id;  // an operator's move, applied at the VM's next pass
  int64_t queued_at = 0;
  std::optional<int64_t> placed_at;
  PlacementLimit limit = PlacementLimit::None;  // why it waits
};

class PlacementRepository {
 public:
  explicit PlacementRepository(db::Database& db) : db_(db) {}

  // Places the VM on the least loaded node that can take it, or queues it (with why)
  // if none can; a VM already placed keeps its node. Also places the VMs queued before
  // it that fit now, first. Returns the VM's placement. Throws NotFound (unknown VM),
  // UsageError (a VM without disks).
  PlacementRecord place_vm(const std::string& vm_id);
  // Places waiting VMs that fit now, in queue order; returns the ids of those placed.
  std::vector<std::string> place_waiting();
  // Frees the VM's slots (its volumes are gone from its node) and places waiting VMs
  // into them. Returns whether it had a placement.
  bool release_vm(const std::string& vm_id);
  // An operator's move of a placed VM to `node_id` (alive, active, with room beside what
  // it holds): recorded for the VM's next pass. Throws NotFound (VM not placed, no such
  // node) or Conflict (the node cannot take it, saying why).
  PlacementRecord request_move(const std::string& vm_id, const std::string& node_id);

  std::optional<PlacementRecord> find(const std::string& vm_id);
  // Placed VMs by node, then the queue in order.
  std::vector<PlacementRecord> list();
  // The nodes with their use, as placement sees them now (the database's clock).
  std::vector<NodeCapacity> capacities();
  // Takes the placement_lock row: the first statement of every transaction that changes
  // placements (here, and a failover's claim: TakeoverRepository).
  void lock();

 private:
  PlacementNeed need_of(const std::string& vm_id);
  void place_queue();  // inside a transaction holding the lock

  db::Database& db_;
};

}  // namespace mk::oma
