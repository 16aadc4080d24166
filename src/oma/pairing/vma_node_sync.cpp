#include "oma/pairing/vma_node_sync.h"

#include <fmt/format.h>

#include "common/log.h"

namespace mk::oma {

VmaNodeSync::VmaNodeSync(PairingService& pairing, VmaRepository& vmas, VmaNodeSyncOptions options)
    : pairing_(pairing), vmas_(vmas), options_(options) {}

VmaNodeSync::~VmaNodeSync() { stop(); }

void VmaNodeSync::start() {
  std::lock_guard lk(mu_);
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void VmaNodeSync::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void VmaNodeSync::loop() {
  for (;;) {
    try {
      round();
    } catch (const std::exception& e) {
      log::warn("VMA sync with the other OMA nodes: this round failed ({}); trying again in {} ms", e.what(),
                options_.interval.count());
    }
    std::unique_lock lk(mu_);
    if (cv_.wait_for(lk, options_.interval, [this] { return stopping_; })) return;
  }
}

void VmaNodeSync::round() {
  auto vmas = vmas_.list_vmas();
  sync_access(vmas);
  tell_nodes(vmas);
}

void VmaNodeSync::sync_access(const std::vector<VmaRecord>& vmas) {
  std::string access;
  for (const auto& v : vmas)
    access += fmt::format("{} {} {} {}\n", v.vma_id, enum_name(v.state), v.tunnel_port, v.ssh_public_key);
  if (access != access_) {
    pairing_.sync_access();  // key lines first: a revoked VMA's reconnection is refused
    access_ = access;
  }
  for (const auto& v : vmas) {
    auto seen = states_.find(v.vma_id);
    bool newly_revoked = v.state == VmaState::Revoked && (seen == states_.end() || seen->second != VmaState::Revoked);
    states_[v.vma_id] = v.state;
    if (!newly_revoked) continue;
    // Revoked elsewhere (or while this node was down): its session here ends too.
    TunnelSessionEnd end = pairing_.end_session(v);
    if (end.outcome != TunnelSessionEnd::Outcome::NoSession)
      log::info("VMA {} ({}) is revoked: its tunnel session on this node: {}: {}", v.vma_id, v.name,
                outcome_name(end.outcome), end.message);
    told_.erase(v.vma_id);
  }
}

void VmaNodeSync::tell_nodes(const std::vector<VmaRecord>& vmas) {
  auto nodes = pairing_.service_nodes();
  if (nodes.empty()) return;  // no registered node has its host key yet
  protocol::ServiceNodes message{nodes};
  std::string list = protocol::encode(message).dump();
  auto now = std::chrono::steady_clock::now();
  for (const auto& v : vmas) {
    if (v.state != VmaState::Approved) continue;
    Told& told = told_[v.vma_id];
    if (told.list == list && now - told.at < options_.resend) continue;
    if (pairing_.tunnel_state(v) != "up") continue;  // not reachable from this node (now)
    try {
      auto reply = pairing_.client(v)->set_service_nodes(message);
      if (told.list != list)
        log::info("VMA {} ({}) told the service's {} live OMA node(s); its tunnels: {}", v.vma_id, v.name,
                  nodes.size(), [&] {
                    std::string s;
                    for (const auto& t : reply.tunnels)
                      s += fmt::format("{}{}={}", s.empty() ? "" : ", ", t.node_id, enum_name(t.tunnel.state));
                    return s;
                  }());
      told = {list, now, ""};
    } catch (const std::exception& e) {
      if (told.error != e.what())
        log::warn("VMA {} ({}): telling it the service's OMA nodes failed: {} (trying again every {} ms)", v.vma_id,
                  v.name, e.what(), options_.interval.count());
      told.error = e.what();
    }
  }
}

}  // namespace mk::oma
