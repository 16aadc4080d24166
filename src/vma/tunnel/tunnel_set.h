// TunnelSet: the VMA's SSH control tunnels, one TunnelSupervisor per OMA node it is
// told about, all with the same reverse port (the VMA's tunnel_port), so that every
// node of the service calls this VMA on its own <tunnel address>:<tunnel_port> and no
// call is forwarded between nodes.
//
// A VMA paired with a single OMA (no nodes) holds one tunnel, keyed by node id "",
// exactly as before nodes existed. apply() replaces the node list (from the pairing
// bundle at start, later from POST /api/v1/service-nodes): a tunnel starts for each new
// node, stops for each node no longer listed (its lease expired, or it left), and
// restarts for a node whose endpoint or host key changed; unchanged ones are left
// alone. The `persist` callback stores the list (and pins the host keys) before any
// tunnel to a new node starts, so that ssh reads the key it must check.
//
// NBD inside SSH (nbd_over_ssh): each tunnel gets its own local port forwarding to its
// node's NBD server; nbd_local_port() picks the one of the node whose NBD address the
// OMA's replicate request names (the node that holds the VM's volumes).
//
// Owns its supervisors (stopped by stop() or the destructor). Thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "protocol/messages.h"
#include "vma/tunnel/tunnel_supervisor.h"

namespace mk::vma {

// The alias under which a node's host key is pinned in known_hosts ("" = the single
// OMA's "migratekit-oma").
std::string node_host_key_alias(const std::string& node_id);

class TunnelSet {
 public:
  using Persist = std::function<void(const std::vector<protocol::ServiceNode>&)>;
  // `base`: the single OMA's tunnel (identity, known_hosts, user, ports, timing); its
  // log_path names the single tunnel's log, nodes' logs are beside it
  // (ssh-tunnel-<node>.log). `persist` may be empty.
  TunnelSet(TunnelConfig base, bool nbd_over_ssh, Persist persist = {});
  ~TunnelSet();
  TunnelSet(const TunnelSet&) = delete;
  TunnelSet& operator=(const TunnelSet&) = delete;

  // Starts the tunnels (to `nodes`, or to the single OMA when empty) now that the
  // VMA's API listens on `local_api_port`.
  void start(int local_api_port, const std::vector<protocol::ServiceNode>& nodes);
  // Replaces the node list (non-empty); returns the tunnels afterwards. Throws
  // mk::Error when persisting fails (nothing changed then).
  std::vector<protocol::NodeTunnel> apply(const std::vector<protocol::ServiceNode>& nodes);
  void stop();

  std::vector<protocol::NodeTunnel> tunnels() const;
  // Every tunnel in one: up when all are up, else the first that is not (its error
  // naming the node); connecting before start().
  protocol::TunnelHealth combined() const;
  // NBD inside SSH: the local port whose forward reaches the node serving `target`.
  // Throws mk::Error when no tunnel does (or NBD does not travel inside SSH).
  int nbd_local_port(const protocol::NbdTarget& target) const;
  // The running supervisors' configurations (tests, diagnosis).
  std::vector<TunnelConfig> configs() const;

 private:
  struct Entry {
    protocol::ServiceNode node;  // node_id "" for the single OMA
    std::unique_ptr<TunnelSupervisor> supervisor;
  };
  TunnelConfig config_for(const protocol::ServiceNode& node) const;

  TunnelConfig base_;
  bool nbd_over_ssh_;
  Persist persist_;
  std::mutex apply_mu_;    // one apply() at a time: the stored list and the tunnels agree
  mutable std::mutex mu_;  // guards entries_, started_
  std::map<std::string, Entry> entries_;
  bool started_ = false;
};

}  // namespace mk::vma
