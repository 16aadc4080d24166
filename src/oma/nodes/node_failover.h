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
//        claimed  -> the VMA asked to stop the failed pass's copy (best effort), the
//                    volumes detached from the dead node's VM (only from that VM: a
//                    volume attached anywhere else stops the takeover, named);
//        detached -> attached to this node's VM, devices waited for;
//        attached -> exports recreated here, and the failed pass started again here
//                    (same kind: an incremental one from the last committed change IDs).
//      Each step first checks in the database that the VM is still placed here and the
//      lease held, and is recorded when done; each is idempotent, so a takeover
//      interrupted by a crash is finished at the next round after a restart. A step that
//      fails is recorded (GET /api/v1/vms/{vm}/placement's takeover) and tried again at
//      the next round.
// The fence (check_owner) is what ExportManager calls before every export change.
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
  // A new pass of the failed one's kind, here (none when the VM has an active job
  // already: resumed by an earlier attempt, or started by an operator). Optional.
  std::function<void(const TakeoverRecord&)> resume;
  // Fencing: whether this node's export server serves the export, and cutting it off.
  std::function<bool(const std::string& export_name)> serves;
  std::function<void(const std::string& export_name)> withdraw;
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
  // placed on another node.
  void check_owner(const std::string& vm_id);

 private:
  void fence_sweep();
  void run_steps(TakeoverRecord t);
  bool owned(const std::string& vm_id);

  TakeoverRepository& takeovers_;
  const NodeLease& lease_;
  TakeoverActions actions_;
  FailoverOptions options_;
  std::mutex mu_;  // guards stopping_; round_mu_ serialises rounds
  std::mutex round_mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mk::oma
