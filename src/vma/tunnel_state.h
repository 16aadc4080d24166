// What the VMA's health reports about its SSH control tunnel to the OMA: the protocol's
// TunnelHealth (state up/connecting/down, since when, why). The tunnel supervisor
// (src/vma/tunnel/) provides it through a TunnelStateProvider; without a tunnel the VMA
// reports "down" with error "no tunnel configured". A provider must be callable from
// any thread.
#pragma once

#include <functional>
#include <vector>

#include "protocol/messages.h"

namespace mk::vma {

using TunnelStateProvider = std::function<protocol::TunnelHealth()>;

// The VMA's tunnels as its API sees them (run_command's TunnelSet, one tunnel per OMA
// node). Every member may be empty: without `list` health lists no tunnel (`tunnel`
// alone says what `state` gives); without `set_nodes` POST /api/v1/service-nodes answers 409 (no
// tunnel runs: not paired, or --no-tunnel). Callable from any thread.
struct Tunnels {
  TunnelStateProvider state;  // every tunnel in one
  std::function<std::vector<protocol::NodeTunnel>()> list;
  // Applies the service's node list; returns the tunnels afterwards. Throws
  // mk::UsageError for a list it refuses, mk::Error when it cannot store it.
  std::function<std::vector<protocol::NodeTunnel>(const std::vector<protocol::ServiceNode>&)> set_nodes;
};

}  // namespace mk::vma
