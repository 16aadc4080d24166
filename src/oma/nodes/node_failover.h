// NodeFailover: on an OMA node of several (issue 18, item 3), takes over the VMs of
// nodes that died, and fences this node off the VMs it lost.
//
// Every round (a background thread, every `interval`):
//   1. Fencing sweep: every export this node's server still serves whose VM is placed on
//      another node (taken over while this node was frozen, cut off from the database,
//      or dead and restarted) is cut off (unpublished, its connections closed): a node
//      that lost its lease and comes back never serves, let alone writes, volumes it no
//      longer owns. Runs whether or not the lease is held.
//   2. While the lease is held: finishes this node's own unfinished takeovers (a crash in
//      the middle), then claims dead nodes' VMs one at a time (TakeoverRepository::
//      claim_one: one transaction, guarded by the dead node's lease expiry by the
//      database's clock; its running pass failed with the reason) and runs the steps:
//        claimed  -> the VMA asked to stop the failed pass's copy (best effort); a
//                    failed cutover or test failover undone in the cloud from what it
//                    recorded (undo_job: the VM it built torn down); the volumes
//                    detached from the dead node's VM (only from that VM: a volume
//                    attached anywhere else stops the takeover, named);
//        detached -> attached to this node's VM, devices waited for;
//        attached -> exports recreated here; a cutover's or test failover's VM restored
//                    (finish_undo: source powered on again, replicated again); the
//                    failed pass started again here (same kind: an incremental one from
//                    the last committed change IDs).
//      Each step first checks in the database that the VM is still placed here and the
//      lease held, and is recorded when done; each is idempotent, so a takeover
//      interrupted by a crash is finished at the next round after a restart. A step that
//      fails is recorded (GET /api/v1/vms/{vm}/placement's takeover) and tried again at
//      the next round.
// The fence (check_owner) is what ExportManager calls before every export change.
//
// Moves (issue 18, item 2) run the same steps between two live nodes. When a pass of a
// VM starts preparing (on whichever node it was started), move_before_pass() claims the
// move if the VM's node is drained or an operator asked for one
// (TakeoverRepository::claim_move): the placement goes to the target node and the pass
// is handed to it. The target node's next round (woken at once when it is this node)
// detaches the volumes from the old node's VM, attaches them to its own, recreates the
// exports here, and adopts the pass (the resume action), which then goes on from the
// committed change IDs like any other. The old node's fencing sweep withdraws its exports
// of the VM (at once when the move was claimed there, else at its next round); nothing
// writes them meanwhile: the VM's one active job is the pass being moved, which has not
// asked the VMA to copy yet.
//
// No VM is ever attached to two nodes: CloudStack attaches a volume to one VM, and the
// new node attaches only after the dead node's VM let it go.
//
// Owns its thread; does not own its collaborators. start/stop from one thread; tick()
// and check_owner() from any.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "oma/db/takeover_repository.h"
#include "oma/nodes/node_lease.h"

namespace mk::oma {

// What a takeover does outside the database. Each throws mk::Error on failure and is
// idempotent (a retried step finds its work done).
struct TakeoverActions {
  std::function<void(const TakeoverRecord&)> stop_copy;       // the failed pass's copy at the VMA (best effort)
  std::function<void(const TakeoverRecord&)> detach;          // from the dead node's VM
  std::function<void(const TakeoverRecord&)> attach;          // to this node's VM
  std::function<void(const TakeoverRecord&)> export_volumes;  // exports here
  // After the volumes are here: the VM's active pass, handed to this node (a move, or a
  // pass started during a takeover), is run here; without one, a new pass of the failed
  // one's kind (a takeover of a running pass). Optional.
  std::function<void(const TakeoverRecord&)> resume;
  // The failed job was a cutover or test failover (not a pass): at step claimed, before
  // the volumes are detached from the dead node's VM, undo_job undoes in the cloud what
  // it recorded (the VM it built, snapshots; its volumes may be on that VM); at step
  // attached, after the exports, finish_undo restores the VM (source power, status).
  // Each does nothing for a pass. Optional.
  std::function<void(const TakeoverRecord&)> undo_job;
  std::function<void(const TakeoverRecord&)> finish_undo;
  // Fencing: whether this node's export server serves the export, and cutting it off.
  std::function<bool(const std::string& export_name)> serves;
  std::function<void(const std::string& export_name)> withdraw;
};

// What move_before_pass() decided for a pass that starts preparing.
struct PassMove {
  bool handed_off = false;  // the volumes move to another node, which runs the pass: stop here
  std::string message;      // for the job's events: the move, or why a move that is due waits
};

struct FailoverOptions {
  std::chrono::milliseconds interval{5000};
  // False: fencing only (local volumes are files on the dead node: nothing can move them).
  bool take_over = true;
};

class NodeFailover {
 public:
  NodeFailover(TakeoverRepository& takeovers, const NodeLease& lease, TakeoverActions actions,
               FailoverOptions options);
  ~NodeFailover();
  NodeFailover(const NodeFailover&) = delete;
  NodeFailover& operator=(const NodeFailover&) = delete;

  void start();
  void stop();  // idempotent
  // One round (the thread's; tests may call it). Never throws.
  void tick();
  // The fencing sweep alone (at start, before any job resumes). Never throws.
  void fence_now();
  // The fence: throws Conflict when this node does not hold its lease, or the VM is
  // placed on another node or on none (cut over, queued).
  void check_owner(const std::string& vm_id);
  // Called by the JobManager when a pass of the VM starts preparing (or resumes in that
  // state), before it touches a volume: claims the VM's move if one is due (see the top),
  // and says whether the pass must leave this node. A pass whose VM is moving to this
  // node goes on here once the volumes are attached here. Throws mk::Error when the
  // database cannot be read (the pass fails and nothing moved).
  PassMove move_before_pass(const std::string& vm_id);
  // Runs a round now (a move to or from this node was claimed).
  void wake();

 private:
  void fence_sweep();
  void run_steps(TakeoverRecord t);
  bool owned(const std::string& vm_id);

  TakeoverRepository& takeovers_;
  const NodeLease& lease_;
  TakeoverActions actions_;
  FailoverOptions options_;
  std::mutex mu_;  // guards stopping_, woken_; round_mu_ serialises rounds
  std::mutex round_mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool woken_ = false;
  std::thread thread_;
};

}  // namespace mk::oma
