// TunnelState: what the VMA's health reports about its SSH control tunnel to the OMA.
// The tunnel supervisor (src/vma/tunnel/) provides it through a TunnelStateProvider;
// without a tunnel the VMA reports state "down" with error "no tunnel configured".
// Plain values; a provider must be callable from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace mk::vma {

struct TunnelState {
  std::string state;                 // "up" | "connecting" | "down"
  int64_t since;                     // unix seconds of the last change of state
  std::optional<std::string> error;  // why it is not up, when known
};

using TunnelStateProvider = std::function<TunnelState()>;

}  // namespace mk::vma
