#include "oma/db/takeover_repository.h"

#include <fmt/format.h>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;
using db::Value;

const EnumTable<TakeoverStep>& enum_table(TakeoverStep) {
  static const EnumTable<TakeoverStep> t{"takeover step", {{TakeoverStep::Claimed, "claimed"},
      {TakeoverStep::Detached, "detached"}, {TakeoverStep::Attached, "attached"}, {TakeoverStep::Exported, "exported"}}};
  return t;
}

const EnumTable<TakeoverKind>& enum_table(TakeoverKind) {
  static const EnumTable<TakeoverKind> t{"takeover kind", {{TakeoverKind::Failover, "failover"},
      {TakeoverKind::Move, "move"}}};
  return t;
}

namespace {

const Table<TakeoverRecord> kTakeovers{"vm_takeovers", {column("vm_id", &TakeoverRecord::vm_id),
    column("from_node", &TakeoverRecord::from_node), column("from_incarnation", &TakeoverRecord::from_incarnation),
    column("from_cloudstack_vm_id", &TakeoverRecord::from_cloudstack_vm_id),
    column("to_node", &TakeoverRecord::to_node), column("step", &TakeoverRecord::step),
    column("reason", &TakeoverRecord::reason), column("failed_job_id", &TakeoverRecord::failed_job_id),
    column("error", &TakeoverRecord::error), column("claimed_at", &TakeoverRecord::claimed_at),
    column("updated_at", &TakeoverRecord::updated_at), column("finished_at", &TakeoverRecord::finished_at),
    column("kind", &TakeoverRecord::kind)}, 1};

}  // namespace

std::optional<TakeoverRecord> TakeoverRepository::claim_one(const std::string& node_id) {
  std::optional<TakeoverRecord> out;
  db_.transaction([&] {
    out.reset();  // an attempt the database aborted claimed nothing
    placements_.lock();
    const std::string now_sql = db_.now_ms_sql();
    const int64_t now = db_.query("SELECT " + now_sql).at(0).i64(0);
    // VMs of nodes whose lease expired (not released: a clean stop keeps its VMs), oldest
    // placement first.
    auto candidates = db_.query(
        fmt::format("SELECT p.vm_id, p.node_id, p.slots, p.disk_bytes, n.incarnation, n.cloudstack_vm_id, "
                    "n.lease_expires_at, a.job_id, j.kind FROM vm_placements p "
                    "JOIN oma_nodes n ON n.node_id = p.node_id "
                    "LEFT JOIN active_jobs a ON a.vm_id = p.vm_id "
                    "LEFT JOIN replication_jobs j ON j.job_id = a.job_id "
                    "WHERE p.node_id <> ? AND n.lease_expires_at <= {} AND n.released_at IS NULL "
                    "ORDER BY p.placed_at, p.vm_id",
                    now_sql),
        {node_id});
    if (candidates.empty()) return;
    std::vector<NodeCapacity> nodes = placements_.capacities();
    for (const auto& c : candidates) {
      PlacementDecision d = choose_node(nodes, {c.i64(2), c.i64(3)}, node_id);
      if (!d.node_id) continue;  // no room here: another node may have it
      TakeoverRecord t;
      t.vm_id = c.str(0);
      t.from_node = c.str(1);
      t.from_incarnation = c.i64(4);
      t.from_cloudstack_vm_id = c.str(5);
      t.lease_expired_at = c.i64(6);
      t.to_node = node_id;
      // The guard is the statement's: the dead node's lease is still expired, by the
      // database's clock, and it is still the incarnation we judged dead.
      int64_t moved = db_.exec(
          fmt::format("UPDATE vm_placements SET node_id = ?, requested_node_id = NULL, placed_at = {0} "
                      "WHERE vm_id = ? AND node_id = ? AND EXISTS (SELECT 1 FROM oma_nodes n WHERE n.node_id = ? "
                      "AND n.incarnation = ? AND n.lease_expires_at <= {0} AND n.released_at IS NULL)",
                      now_sql),
          {node_id, t.vm_id, t.from_node, t.from_node, t.from_incarnation});
      if (moved != 1) continue;
      t.reason = fmt::format(
          "OMA node {} stopped renewing its lease (incarnation {}, expired {} ms before by the database's clock: "
          "its process or VM died, or it lost the database); node {} took VM {} over",
          t.from_node, t.from_incarnation, now - t.lease_expired_at, node_id, t.vm_id);
      // The dead node had claimed the VM itself (a move, or a takeover) and died before
      // the volumes left the VM they were on: they are still there, not on its VM.
      auto before = db_.query("SELECT step, from_node, from_cloudstack_vm_id, failed_job_id FROM vm_takeovers "
                              "WHERE vm_id = ? AND to_node = ? AND finished_at IS NULL",
                              {t.vm_id, t.from_node});
      if (!before.empty() && parse_enum<TakeoverStep>(before.at(0).str(0), "vm_takeovers.step") ==
                                 TakeoverStep::Claimed) {
        t.from_cloudstack_vm_id = before.at(0).str(2);
        t.reason += fmt::format(" (node {} had claimed it from node {} and died before its volumes left node {}'s VM: "
                                "they are detached from there)",
                                t.from_node, before.at(0).str(1), before.at(0).str(1));
      }
      if (!c.is_null(7)) {
        t.failed_job_id = c.str(7);
        const JobKind kind = parse_enum<JobKind>(c.str(8), "replication_jobs.kind");
        std::optional<VmStatus> held;
        std::string error;
        if (is_pass(kind)) {
          error = fmt::format(
              "{}. This pass was interrupted: what it wrote is unknown and its change IDs were never committed, so "
              "the next pass starts from the last committed change IDs and rewrites every area this one could "
              "have touched",
              t.reason);
        } else if (only_reads_replicas(kind)) {
          held = VmStatus::Replicated;
          error = fmt::format("{}. This {} was interrupted; it only read overlays of the replicas on node {}, so "
                              "nothing is undone: start it again once the VM's volumes are on node {}",
                              t.reason, kind, t.from_node, node_id);
        } else {
          // A cutover or test failover: node_id undoes what it recorded (the VM it built,
          // snapshots), takes the volumes and restores the source's power; the VM is
          // held (cutover_failed / test_failover) until then.
          held = kind == JobKind::Cutover ? VmStatus::CutoverFailed : VmStatus::TestFailover;
          error = fmt::format(
              "{}. This {} was interrupted; node {} rolls it back from the changes it recorded (what it built in "
              "CloudStack torn down, its volumes attached to node {} and exported, the source powered on again if "
              "it powered it off), then the VM is replicated again: start the {} again from there (it makes a new "
              "final pass); the VM's takeover (GET /api/v1/vms/{}/placement) says how far it is",
              t.reason, kind, node_id, node_id, kind, t.vm_id);
        }
        jobs_.add_event(*t.failed_job_id, EventLevel::Error, error);
        jobs_.finish_job(*t.failed_job_id, JobStatus::Failed, error, held);
      } else if (!before.empty() && !before.at(0).is_null(3)) {
        // The dead node had claimed it and was still undoing or restarting the job its
        // own claim failed: that job is this takeover's to finish.
        t.failed_job_id = before.at(0).str(3);
      }
      db_.exec("DELETE FROM vm_takeovers WHERE vm_id = ?", {t.vm_id});
      t.step = TakeoverStep::Claimed;
      t.claimed_at = t.updated_at = now;
      kTakeovers.insert(db_, t);
      out = t;
      return;
    }
  });
  return out;
}

MoveClaim TakeoverRepository::claim_move(const std::string& vm_id) {
  MoveClaim out;
  db_.transaction([&] {
    out = MoveClaim{};  // a transaction the database aborts and runs again starts afresh
    placements_.lock();
    if (auto t = kTakeovers.query_one(db_, "WHERE vm_id = ? AND finished_at IS NULL", {vm_id})) {
      out.move = std::move(t);
      return;
    }
    auto p = placements_.find(vm_id);
    if (!p || !p->node_id) return;  // not placed yet: placement puts it on an active node
    const std::string from = *p->node_id;
    auto src = db_.query("SELECT state, incarnation, cloudstack_vm_id FROM oma_nodes WHERE node_id = ?", {from});
    if (src.empty()) return;
    const bool drained = parse_enum<NodeState>(src.at(0).str(0), "oma_nodes.state") == NodeState::Draining;
    const bool requested = p->requested_node_id && *p->requested_node_id != from;
    if (!drained && !requested) return;
    std::string why = requested ? fmt::format("an operator moved it to node {}", *p->requested_node_id)
                                : fmt::format("{} is drained", from);
    if (src.at(0).str(2).empty()) {
      out.not_moved = fmt::format("VM {} is due to move ({}), but node {} keeps local volumes (no CloudStack VM "
                                  "recorded), which cannot move: this pass runs on node {}",
                                  vm_id, why, from, from);
      return;
    }
    std::vector<NodeCapacity> nodes = placements_.capacities();
    if (p->requested_node_id) {  // its own reservation does not count against it there
      for (auto& n : nodes) {
        if (n.node_id != *p->requested_node_id) continue;
        n.slots_used -= p->slots;
        n.bytes_used -= p->disk_bytes;
      }
    }
    PlacementDecision d = choose_node(nodes, {p->slots, p->disk_bytes},
                                      requested ? p->requested_node_id : std::nullopt);
    if (!d.node_id || *d.node_id == from) {
      out.not_moved = fmt::format("VM {} is due to move ({}), but {}: this pass runs on node {} and the move is "
                                  "tried again at the next pass",
                                  vm_id, why, d.node_id ? "no other node can take it" : d.reason, from);
      return;
    }
    const std::string now_sql = db_.now_ms_sql();
    if (db_.exec(fmt::format("UPDATE vm_placements SET node_id = ?, requested_node_id = NULL, placed_at = {} "
                             "WHERE vm_id = ? AND node_id = ?",
                             now_sql),
                 {*d.node_id, vm_id, from}) != 1)
      return;
    TakeoverRecord t;
    t.kind = TakeoverKind::Move;
    t.vm_id = vm_id;
    t.from_node = from;
    t.from_incarnation = src.at(0).i64(1);
    t.from_cloudstack_vm_id = src.at(0).str(2);
    t.to_node = *d.node_id;
    t.step = TakeoverStep::Claimed;
    t.reason = fmt::format("moving volumes from node {} to node {} because {}", from, t.to_node, why);
    t.claimed_at = t.updated_at = db_.query("SELECT " + now_sql).at(0).i64(0);
    db_.exec("DELETE FROM vm_takeovers WHERE vm_id = ?", {vm_id});
    kTakeovers.insert(db_, t);
    out.move = t;
    out.claimed_now = true;
  });
  return out;
}

std::vector<TakeoverRecord> TakeoverRepository::unfinished(const std::string& node_id) {
  return kTakeovers.query(db_, "WHERE to_node = ? AND finished_at IS NULL ORDER BY claimed_at, vm_id", {node_id});
}

bool TakeoverRepository::advance(const std::string& vm_id, const std::string& node_id, TakeoverStep step) {
  const std::string now = db_.now_ms_sql();
  return db_.exec(fmt::format("UPDATE vm_takeovers SET step = ?, error = NULL, updated_at = {0}, finished_at = {1} "
                              "WHERE vm_id = ? AND to_node = ? AND EXISTS (SELECT 1 FROM vm_placements p "
                              "WHERE p.vm_id = vm_takeovers.vm_id AND p.node_id = ?)",
                              now, step == TakeoverStep::Exported ? now : std::string("NULL")),
                  {enum_name(step), vm_id, node_id, node_id}) == 1;
}

void TakeoverRepository::record_error(const std::string& vm_id, const std::string& node_id, const std::string& error) {
  db_.exec(fmt::format("UPDATE vm_takeovers SET error = ?, updated_at = {} WHERE vm_id = ? AND to_node = ?",
                       db_.now_ms_sql()),
           {error, vm_id, node_id});
}

std::optional<TakeoverRecord> TakeoverRepository::find(const std::string& vm_id) {
  return kTakeovers.query_one(db_, "WHERE vm_id = ?", {vm_id});
}

std::optional<std::string> TakeoverRepository::owner_of(const std::string& vm_id) {
  auto placement = placements_.find(vm_id);
  return placement ? placement->node_id : std::nullopt;
}

std::vector<ForeignExport> TakeoverRepository::exports_placed_elsewhere(const std::string& node_id) {
  std::vector<ForeignExport> out;
  // Also VMs placed on no node: cut over (their placement released) or waiting in the
  // queue; no node serves their volumes.
  for (const auto& r : db_.query("SELECT e.export_name, v.vm_id, COALESCE(p.node_id, '') FROM nbd_exports e "
                                 "JOIN volumes v ON v.volume_id = e.volume_id "
                                 "LEFT JOIN vm_placements p ON p.vm_id = v.vm_id "
                                 "WHERE p.node_id IS NULL OR p.node_id <> ? ORDER BY e.export_name",
                                 {node_id})) {
    out.push_back({r.str(0), r.str(1), r.str(2)});
  }
  return out;
}

}  // namespace mk::oma
