#include "oma/db/placement_repository.h"

#include <fmt/format.h>

#include <map>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;
using db::Value;

namespace {

const Table<PlacementRecord> kPlacements{"vm_placements", {column("vm_id", &PlacementRecord::vm_id),
    column("node_id", &PlacementRecord::node_id), column("slots", &PlacementRecord::slots),
    column("disk_bytes", &PlacementRecord::disk_bytes), column("waiting_limit", &PlacementRecord::limit),
    column("waiting_reason", &PlacementRecord::waiting_reason),
    column("requested_node_id", &PlacementRecord::requested_node_id),
    column("queued_at", &PlacementRecord::queued_at), column("placed_at", &PlacementRecord::placed_at)}, 1};

}  // namespace

void PlacementRepository::lock() {
  // An UPDATE, not a SELECT: it takes the row's write lock until the transaction ends
  // (InnoDB), and on SQLite the transaction already holds the database's write lock.
  db_.exec("UPDATE placement_lock SET version = version + 1 WHERE name = 'placement'");
}

PlacementNeed PlacementRepository::need_of(const std::string& vm_id) {
  if (db_.query("SELECT 1 FROM vm_contexts WHERE vm_id = ?", {vm_id}).empty())
    throw NotFound(fmt::format("VM {} is not known to the OMA: add it first (POST /api/v1/vms)", vm_id));
  auto row = db_.query("SELECT COUNT(*), COALESCE(SUM(capacity_bytes), 0) FROM vm_disks WHERE vm_id = ?", {vm_id});
  PlacementNeed need{row.at(0).i64(0), row.at(0).i64(1)};
  if (need.slots == 0) throw UsageError(fmt::format("VM {} has no disks: nothing to place on a node", vm_id));
  return need;
}

std::vector<NodeCapacity> PlacementRepository::capacities() {
  std::vector<NodeCapacity> out;
  db_.transaction([&] {
    out.clear();  // run again after a conflict: start afresh
    const std::string now = db_.now_ms_sql();
    for (const auto& r : db_.query(fmt::format("SELECT node_id, state, volume_slots, disk_bytes, "
                                               "CASE WHEN lease_expires_at > {} THEN 1 ELSE 0 END "
                                               "FROM oma_nodes ORDER BY node_id",
                                               now))) {
      NodeCapacity n;
      n.node_id = r.str(0);
      n.state = parse_enum<NodeState>(r.str(1), "oma_nodes.state");
      n.volume_slots = r.i64(2);
      n.disk_bytes = r.i64(3);
      n.alive = r.i64(4) == 1;
      out.push_back(n);
    }
    std::map<std::string, NodeCapacity*> by_id;
    for (auto& n : out) by_id[n.node_id] = &n;
    // A VM's slots count on its node, and on the node an operator moves it to (reserved
    // until its next pass moves it).
    for (const auto* owner : {"node_id", "requested_node_id"}) {
      for (const auto& r : db_.query(fmt::format("SELECT {0}, SUM(slots), SUM(disk_bytes), COUNT(*) FROM "
                                                 "vm_placements WHERE {0} IS NOT NULL GROUP BY {0}",
                                                 owner))) {
        auto it = by_id.find(r.str(0));
        if (it == by_id.end()) continue;  // a node row removed by hand: nobody can be placed there anyway
        it->second->slots_used += r.i64(1);
        it->second->bytes_used += r.i64(2);
        if (std::string(owner) == "node_id") it->second->vms += r.i64(3);
      }
    }
  });
  return out;
}

void PlacementRepository::place_queue() {
  std::vector<NodeCapacity> nodes = capacities();
  const std::string now = db_.now_ms_sql();
  for (auto& p : kPlacements.query(db_, "WHERE node_id IS NULL ORDER BY queued_at, vm_id")) {
    PlacementDecision d = choose_node(nodes, {p.slots, p.disk_bytes});
    if (!d.node_id) {
      db_.exec("UPDATE vm_placements SET waiting_limit = ?, waiting_reason = ? WHERE vm_id = ?",
               {enum_name(d.limit), d.reason, p.vm_id});
      continue;
    }
    db_.exec(fmt::format("UPDATE vm_placements SET node_id = ?, waiting_limit = ?, waiting_reason = NULL, "
                         "placed_at = {} WHERE vm_id = ? AND node_id IS NULL",
                         now),
             {*d.node_id, enum_name(PlacementLimit::None), p.vm_id});
    for (auto& n : nodes) {
      if (n.node_id != *d.node_id) continue;
      n.slots_used += p.slots;
      n.bytes_used += p.disk_bytes;
      ++n.vms;
    }
  }
}

PlacementRecord PlacementRepository::place_vm(const std::string& vm_id) {
  PlacementRecord out;
  db_.transaction([&] {
    lock();
    PlacementNeed need = need_of(vm_id);
    auto existing = kPlacements.query_one(db_, "WHERE vm_id = ?", {vm_id});
    if (!existing) {
      db_.exec(fmt::format("INSERT INTO vm_placements (vm_id, node_id, slots, disk_bytes, waiting_limit, "
                           "waiting_reason, requested_node_id, queued_at, placed_at) "
                           "VALUES (?, NULL, ?, ?, ?, NULL, NULL, {}, NULL)",
                           db_.now_ms_sql()),
               {vm_id, need.slots, need.bytes, enum_name(PlacementLimit::None)});
    } else if (!existing->node_id) {
      // Its disks may have changed while it waited.
      db_.exec("UPDATE vm_placements SET slots = ?, disk_bytes = ? WHERE vm_id = ?", {need.slots, need.bytes, vm_id});
    }
    place_queue();
    out = kPlacements.query_written(db_, "WHERE vm_id = ?", {vm_id}, "VM " + vm_id + "'s placement");
  });
  return out;
}

std::vector<std::string> PlacementRepository::place_waiting() {
  std::vector<std::string> placed;
  db_.transaction([&] {
    placed.clear();
    lock();
    std::vector<std::string> before;
    for (const auto& p : kPlacements.query(db_, "WHERE node_id IS NULL")) before.push_back(p.vm_id);
    place_queue();
    for (const auto& id : before) {
      if (kPlacements.query_one(db_, "WHERE vm_id = ? AND node_id IS NOT NULL", {id})) placed.push_back(id);
    }
  });
  return placed;
}

bool PlacementRepository::release_vm(const std::string& vm_id) {
  bool had = false;
  db_.transaction([&] {
    lock();
    had = db_.exec("DELETE FROM vm_placements WHERE vm_id = ?", {vm_id}) == 1;
    if (had) place_queue();
  });
  return had;
}

PlacementRecord PlacementRepository::request_move(const std::string& vm_id, const std::string& node_id) {
  PlacementRecord out;
  db_.transaction([&] {
    lock();
    auto p = kPlacements.query_one(db_, "WHERE vm_id = ?", {vm_id});
    if (!p || !p->node_id) throw NotFound(fmt::format("VM {} is not placed on a node: nothing to move", vm_id));
    if (*p->node_id == node_id) {
      db_.exec("UPDATE vm_placements SET requested_node_id = NULL WHERE vm_id = ?", {vm_id});
    } else {
      std::vector<NodeCapacity> nodes = capacities();
      if (p->requested_node_id) {  // its own reservation does not count against a new target
        for (auto& n : nodes) {
          if (n.node_id != *p->requested_node_id) continue;
          n.slots_used -= p->slots;
          n.bytes_used -= p->disk_bytes;
        }
      }
      bool known = false;
      for (const auto& n : nodes) known = known || n.node_id == node_id;
      if (!known) throw NotFound(fmt::format("no OMA node '{}' (GET /api/v1/nodes lists them)", node_id.substr(0, 64)));
      PlacementDecision d = choose_node(nodes, {p->slots, p->disk_bytes}, node_id);
      if (!d.node_id) throw Conflict(fmt::format("VM {} cannot move to node {}: {}", vm_id, node_id, d.reason));
      db_.exec("UPDATE vm_placements SET requested_node_id = ? WHERE vm_id = ?", {node_id, vm_id});
    }
    out = kPlacements.query_written(db_, "WHERE vm_id = ?", {vm_id}, "VM " + vm_id + "'s placement");
  });
  return out;
}

std::optional<PlacementRecord> PlacementRepository::find(const std::string& vm_id) {
  return kPlacements.query_one(db_, "WHERE vm_id = ?", {vm_id});
}

std::vector<PlacementRecord> PlacementRepository::list() {
  std::vector<PlacementRecord> out;
  db_.transaction([&] {
    out = kPlacements.query(db_, "WHERE node_id IS NOT NULL ORDER BY node_id, vm_id");
    auto queue = kPlacements.query(db_, "WHERE node_id IS NULL ORDER BY queued_at, vm_id");
    out.insert(out.end(), queue.begin(), queue.end());
  });
  return out;
}

}  // namespace mk::oma
