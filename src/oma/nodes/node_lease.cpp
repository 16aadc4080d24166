#include "oma/nodes/node_lease.h"

#include <fmt/format.h>

#include "common/log.h"
#include "oma/errors.h"

namespace mk::oma {

NodeLease::NodeLease(NodeRepository& nodes, NodeRecord self, NodeLeaseOptions options)
    : nodes_(nodes), self_(std::move(self)), options_(options) {
  if (options_.renew_every >= options_.lease)
    throw UsageError(fmt::format("node {}: the lease ({} ms) must be longer than its renewal interval ({} ms)",
                                 self_.node_id, options_.lease.count(), options_.renew_every.count()));
}

NodeLease::~NodeLease() { stop(); }

void NodeLease::start() {
  auto deadline = std::chrono::steady_clock::now() + options_.start_wait;
  bool told = false;
  for (;;) {
    auto begun = std::chrono::steady_clock::now();
    if (auto g = nodes_.register_node(self_, options_.lease.count())) {
      std::lock_guard lock(mu_);
      grant_ = *g;
      last_renewal_ = begun;
      held_ = true;
      if (options_.on_change) options_.on_change(begun);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      auto v = nodes_.find_node(self_.node_id);
      throw Conflict(fmt::format(
          "OMA node '{}' is held by another running process (its lease was renewed {} ms ago by the database's "
          "clock, and kept being renewed while this one waited {} s): give this OMA another --node-id, or stop "
          "the other",
          self_.node_id, v ? nodes_.database_now() - v->node.renewed_at : 0,
          std::chrono::duration_cast<std::chrono::seconds>(options_.start_wait).count()));
    }
    if (!told) {
      log::warn("node {}: its lease is held by another process (a previous run that died?); waiting for it to run "
                "out (at most {} s)",
                self_.node_id, std::chrono::duration_cast<std::chrono::seconds>(options_.start_wait).count());
      told = true;
    }
    std::this_thread::sleep_for(std::min(options_.renew_every, std::chrono::milliseconds(1000)));
  }
  log::info("node {}: registered (incarnation {}, lease {} ms by the database's clock)", self_.node_id,
            grant_.incarnation, options_.lease.count());
  renewer_ = std::thread([this] { renew_loop(); });
}

bool NodeLease::held() const {
  std::lock_guard lock(mu_);
  return held_ && std::chrono::steady_clock::now() - last_renewal_ < options_.lease;
}

void NodeLease::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (renewer_.joinable()) renewer_.join();
  if (!held_) return;
  held_ = false;
  try {
    if (nodes_.release(grant_.node_id, grant_.incarnation)) log::info("node {}: lease released", grant_.node_id);
  } catch (const std::exception& e) {
    log::warn("node {}: could not release its lease ({}); it runs out by itself", grant_.node_id, e.what());
  }
}

NodeLeaseGrant NodeLease::grant() const {
  std::lock_guard lock(mu_);
  return grant_;
}

void NodeLease::set_api_url(const std::string& url) {
  NodeLeaseGrant g;
  {
    std::lock_guard lock(mu_);
    self_.api_url = url;  // for registering again
    g = grant_;
  }
  nodes_.set_api_url(g.node_id, g.incarnation, url);
}

void NodeLease::renew_loop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, options_.renew_every, [this] { return stopping_; })) {
    lock.unlock();
    renew_once();
    lock.lock();
  }
}

void NodeLease::renew_once() {
  auto begun = std::chrono::steady_clock::now();
  try {
    NodeLeaseGrant g = grant();
    if (held_) {
      if (auto expires = nodes_.renew(g.node_id, g.incarnation, options_.lease.count())) {
        {
          std::lock_guard lock(mu_);
          grant_.expires_at = *expires;
          last_renewal_ = begun;
        }
        if (options_.on_change) options_.on_change(begun);
        return;
      }
      held_ = false;
      if (options_.on_change) options_.on_change(std::nullopt);
      log::error("node {}: lease lost (incarnation {} expired or was taken over by the database's clock); "
                 "registering again",
                 g.node_id, g.incarnation);
    }
    NodeRecord self;
    {
      std::lock_guard lock(mu_);
      self = self_;
    }
    if (auto again = nodes_.register_node(self, options_.lease.count())) {
      std::lock_guard lock(mu_);
      grant_ = *again;
      last_renewal_ = begun;
      held_ = true;
      log::info("node {}: registered again (incarnation {})", again->node_id, again->incarnation);
    }
    if (held_ && options_.on_change) options_.on_change(begun);
  } catch (const std::exception& e) {
    // The database is unreachable: the lease is as good as lost once a whole lease
    // has passed since the last renewal began.
    std::unique_lock lock(mu_);
    if (held_ && begun - last_renewal_ >= options_.lease) {
      held_ = false;
      log::error("node {}: lease lost: no renewal for {} ms ({})", self_.node_id, options_.lease.count(), e.what());
      lock.unlock();
      if (options_.on_change) options_.on_change(std::nullopt);
    } else {
      log::warn("node {}: lease renewal failed ({}); retrying", self_.node_id, e.what());
    }
  }
}

}  // namespace mk::oma
