#include "oma/nodes/node_failover.h"

#include <fmt/format.h>

#include "common/log.h"
#include "oma/errors.h"

namespace mk::oma {

NodeFailover::NodeFailover(TakeoverRepository& takeovers, const NodeLease& lease, TakeoverActions actions,
                           FailoverOptions options)
    : takeovers_(takeovers), lease_(lease), actions_(std::move(actions)), options_(options) {}

NodeFailover::~NodeFailover() { stop(); }

void NodeFailover::start() {
  thread_ = std::thread([this] {
    std::unique_lock lock(mu_);
    while (!stopping_) {
      lock.unlock();
      tick();
      lock.lock();
      cv_.wait_for(lock, options_.interval, [this] { return stopping_ || woken_; });
      woken_ = false;
    }
  });
}

void NodeFailover::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void NodeFailover::check_owner(const std::string& vm_id) {
  const std::string& me = lease_.node_id();
  if (!lease_.held())
    throw Conflict(fmt::format("OMA node {} does not hold its lease: it changes no export (VM {}) until it holds it "
                               "again (check its connection to the database)",
                               me, vm_id));
  auto owner = takeovers_.owner_of(vm_id);
  // Placed on no node: cut over (its volumes belong to the VM built for it), or waiting
  // in the queue (no node holds its volumes yet). No node exports it: a pass places its
  // VM before it creates exports, so only a stale writer gets here.
  if (!owner) {
    log::warn("node {}: fenced: refused an export change for VM {}, which is placed on no node", me, vm_id);
    throw Conflict(fmt::format("OMA node {} does not hold VM {}: it is placed on no node (cut over, or waiting for "
                               "room); this node refuses to change its exports (start a pass: it places the VM)",
                               me, vm_id));
  }
  if (*owner != me) {
    log::warn("node {}: fenced: refused an export change for VM {}, whose volumes are placed on node {}", me, vm_id,
              *owner);
    throw Conflict(fmt::format("OMA node {} no longer holds VM {}: its volumes are placed on node {} (taken over or "
                               "moved); this node refuses to change its exports (run its passes on node {})",
                               me, vm_id, *owner, *owner));
  }
}

void NodeFailover::wake() {
  {
    std::lock_guard lock(mu_);
    woken_ = true;
  }
  cv_.notify_all();
}

PassMove NodeFailover::move_before_pass(const std::string& vm_id) {
  if (!options_.take_over) return {};  // local volumes: nothing can move them
  const std::string& me = lease_.node_id();
  MoveClaim claim = takeovers_.claim_move(vm_id);
  if (!claim.move) return {false, claim.not_moved};
  const TakeoverRecord& t = *claim.move;
  // Its volumes are attached here already (the round that adopts the pass, or a restart
  // after it): the pass goes on here and recreates the exports itself.
  if (!claim.claimed_now && t.to_node == me && t.step >= TakeoverStep::Attached) return {};
  if (t.to_node == me || t.from_node == me) wake();
  if (claim.claimed_now) {
    log::info("node {}: {} (claimed for a pass of VM {})", me, t.reason, vm_id);
    return {true, fmt::format("{}; node {} goes on with this pass once they are attached there", t.reason,
                              t.to_node)};
  }
  return {true, fmt::format("VM {}'s volumes are moving from node {} to node {} ({}; step done: {}{}); node {} goes "
                            "on with this pass once they are attached there",
                            vm_id, t.from_node, t.to_node, t.kind == TakeoverKind::Move ? "a move" : "a takeover",
                            t.step, t.error ? ", last error: " + *t.error : std::string(), t.to_node)};
}

bool NodeFailover::owned(const std::string& vm_id) {
  return lease_.held() && takeovers_.owner_of(vm_id).value_or("") == lease_.node_id();
}

void NodeFailover::fence_now() {
  try {
    fence_sweep();
  } catch (const std::exception& e) {
    log::warn("node {}: fencing sweep failed ({}); retrying", lease_.node_id(), e.what());
  }
}

void NodeFailover::tick() {
  std::lock_guard round(round_mu_);
  fence_now();
  if (!options_.take_over || !lease_.held()) return;
  try {
    for (auto& t : takeovers_.unfinished(lease_.node_id())) run_steps(std::move(t));
    for (;;) {
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      if (!lease_.held()) return;
      auto t = takeovers_.claim_one(lease_.node_id());
      if (!t) return;
      log::warn("node {}: {}{}", lease_.node_id(), t->reason,
                t->failed_job_id ? fmt::format("; its pass {} failed", *t->failed_job_id) : std::string());
      run_steps(std::move(*t));
    }
  } catch (const std::exception& e) {
    log::warn("node {}: failover round failed ({}); retrying", lease_.node_id(), e.what());
  }
}

void NodeFailover::fence_sweep() {
  if (!actions_.serves) return;
  for (const auto& e : takeovers_.exports_placed_elsewhere(lease_.node_id())) {
    if (!actions_.serves(e.export_name)) continue;
    actions_.withdraw(e.export_name);
    log::warn("node {}: fenced: export {} withdrawn (VM {} is placed {} now); this node does not touch its volumes",
              lease_.node_id(), e.export_name, e.vm_id,
              e.node_id.empty() ? std::string("on no node (cut over, or queued)") : "on node " + e.node_id);
  }
}

void NodeFailover::run_steps(TakeoverRecord t) {
  const std::string& me = lease_.node_id();
  auto begun = std::chrono::steady_clock::now();
  try {
    if (t.step == TakeoverStep::Claimed) {
      if (!owned(t.vm_id)) return;
      if (t.failed_job_id && actions_.stop_copy) {
        try {
          actions_.stop_copy(t);
        } catch (const std::exception& e) {
          // The dead node's export server died with it, and the detach below takes
          // the volume from under any writer that remains.
          log::warn("node {}: VM {}: could not tell the VMA to stop pass {} ({}); detaching its volumes anyway", me,
                    t.vm_id, *t.failed_job_id, e.what());
        }
      }
      if (t.failed_job_id && actions_.undo_job) actions_.undo_job(t);
      actions_.detach(t);
      if (!takeovers_.advance(t.vm_id, me, TakeoverStep::Detached)) return;
      t.step = TakeoverStep::Detached;
    }
    if (t.step == TakeoverStep::Detached) {
      if (!owned(t.vm_id)) return;
      actions_.attach(t);
      if (!takeovers_.advance(t.vm_id, me, TakeoverStep::Attached)) return;
      t.step = TakeoverStep::Attached;
    }
    if (t.step == TakeoverStep::Attached) {
      actions_.export_volumes(t);  // fenced by the ExportManager
      if (t.failed_job_id && actions_.finish_undo) actions_.finish_undo(t);
      // Before the step is recorded: a crash in between resumes again (an active job
      // then makes it a no-op).
      if (actions_.resume) actions_.resume(t);
      if (!takeovers_.advance(t.vm_id, me, TakeoverStep::Exported)) return;
      log::info("node {}: VM {} {} node {}: volumes detached, attached here and exported{} ({} ms)", me, t.vm_id,
                t.kind == TakeoverKind::Move ? "moved here from" : "taken over from", t.from_node,
                t.failed_job_id ? ", its pass started again" : "",
                std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - begun)
                    .count());
    }
  } catch (const std::exception& e) {
    std::string error = fmt::format("{} of VM {} from node {} stopped at step '{}': {}",
                                    t.kind == TakeoverKind::Move ? "move" : "takeover", t.vm_id, t.from_node,
                                    enum_name(t.step), e.what());
    log::error("node {}: {} (tried again at the next round)", me, error);
    try {
      takeovers_.record_error(t.vm_id, me, error);
    } catch (const std::exception&) {
    }
  }
}

}  // namespace mk::oma
