// TakeoverRepository: failover of a dead OMA node's VMs (issue 18, item 3), in the
// database: the claim that moves a VM to a live node, and the record of each step of
// the takeover that follows (vm_takeovers).
//
// A node is dead when its lease expired by the database's clock (it stopped renewing:
// its process or VM died, or it lost the database). A node that stopped cleanly
// released its lease: its VMs stay where they are until it comes back (or an operator
// moves them). claim_one() is one transaction that
//   * takes the placement lock (as every placement does), so two live nodes never both
//     count one free slot nor both claim one VM;
//   * moves one VM of a dead node to the claiming node, guarded in the UPDATE itself by
//     the dead node's lease still being expired (and its incarnation unchanged), by the
//     database's clock: a node that renewed meanwhile keeps its VM;
//   * fails the VM's running pass with the reason (naming the dead node): its writes are
//     unknown and its change IDs were never committed, so the next pass starts from the
//     committed ones and rewrites every area that pass could have touched;
//   * records the takeover at step "claimed".
// The claiming node then runs the steps (nodes/node_failover.h) and records each one;
// each step is idempotent, so a node that crashed in the middle finishes its own
// takeovers after it restarts, and one whose lease ran out meanwhile loses them to the
// next claim like any other VM.
//
// A VM whose active job is not a pass (a cutover, its rollback, a test failover or its
// cleanup on the dead node) is claimed too: the job fails naming the dead node, the VM is
// held (cutover_failed, test_failover) and the claiming node undoes what the job
// recorded ahead of each change before it takes the volumes (CutoverService::
// undo_interrupted), then restores the VM (finish_interrupted).
//
// A move (issue 18, item 2) is the same record between two live nodes: claim_move(),
// called when a pass of the VM starts, moves the placement of a VM whose node is
// drained (to the node placement chooses) or which an operator moves (to that node),
// in one transaction under the placement lock, and records it at step "claimed" with
// kind "move"; the target node then runs the same steps as for a takeover.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"
#include "oma/db/job_repository.h"
#include "oma/db/placement_repository.h"

namespace mk::oma {

// Where a takeover is: claimed (placement moved, job failed), detached (the volumes
// left the dead node's VM), attached (on the new node's VM, devices there), exported
// (its exports recreated on the new node: done).
enum class TakeoverStep { Claimed, Detached, Attached, Exported };
const EnumTable<TakeoverStep>& enum_table(TakeoverStep);

// Why the VM changes node: its node died (failover: a claim), or it moves between live
// nodes at its next pass (move: its node is drained, or an operator moved it).
enum class TakeoverKind { Failover, Move };
const EnumTable<TakeoverKind>& enum_table(TakeoverKind);

// Times in ms since the Unix epoch on the database's clock.
struct TakeoverRecord {
  std::string vm_id;
  std::string from_node;
  int64_t from_incarnation = 0;
  std::string from_cloudstack_vm_id;  // "" with local volumes
  std::string to_node;
  TakeoverStep step = TakeoverStep::Claimed;
  std::string reason;
  std::optional<std::string> failed_job_id;  // the pass the claim failed
  std::optional<std::string> error;          // the last step's failure (retried)
  int64_t claimed_at = 0, updated_at = 0;
  std::optional<int64_t> finished_at;
  int64_t lease_expired_at = 0;  // the dead node's lease expiry (claim_one's answer only)
  TakeoverKind kind = TakeoverKind::Failover;
};

// What claim_move() found for a VM whose pass starts.
struct MoveClaim {
  // The VM's unfinished takeover or move (claimed now, or before and not done yet);
  // nullopt: its volumes stay where they are.
  std::optional<TakeoverRecord> move;
  bool claimed_now = false;
  // Why a move that is due cannot happen now (no other node can take the VM, the node
  // an operator chose cannot any more): the pass runs where the VM is.
  std::string not_moved;
};

// An export this node may still serve although its VM is placed on another node, or on
// none (node_id "": cut over, its placement released; or queued).
struct ForeignExport {
  std::string export_name, vm_id, node_id;
};

class TakeoverRepository {
 public:
  TakeoverRepository(db::Database& db, JobRepository& jobs, PlacementRepository& placements)
      : db_(db), jobs_(jobs), placements_(placements) {}

  // Claims one VM of a dead node for `node_id` (alive, active, with room for it), as
  // described above; nullopt when there is none it can take now.
  std::optional<TakeoverRecord> claim_one(const std::string& node_id);
  // For a pass of the VM that starts now: its unfinished takeover or move if it has one;
  // else, if its node is drained or an operator asked for a move, claims the move (see
  // the top); else nothing. A node whose CloudStack VM is not recorded (local volumes)
  // moves nothing.
  MoveClaim claim_move(const std::string& vm_id);
  // The takeovers `node_id` claimed and has not finished, oldest first.
  std::vector<TakeoverRecord> unfinished(const std::string& node_id);
  // Records that a step is done (and, for Exported, that the takeover is finished),
  // only while the VM is still placed on `node_id`; false when it is not (lost again).
  bool advance(const std::string& vm_id, const std::string& node_id, TakeoverStep step);
  // Records a step's failure (retried at the next round).
  void record_error(const std::string& vm_id, const std::string& node_id, const std::string& error);
  std::optional<TakeoverRecord> find(const std::string& vm_id);

  // The node the VM is placed on now, nullopt if none (the fencing check before an
  // export change).
  std::optional<std::string> owner_of(const std::string& vm_id);
  // Exports recorded for VMs placed on another node than `node_id`, or on no node: what a
  // node that lost its VMs (or whose VMs were cut over while it was away) must not serve.
  std::vector<ForeignExport> exports_placed_elsewhere(const std::string& node_id);

 private:
  db::Database& db_;
  JobRepository& jobs_;
  PlacementRepository& placements_;
};

}  // namespace mk::oma
