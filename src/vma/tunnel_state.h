// TunnelState: the SSH control tunnel's state as the VMA reports it in its health
// ("up" | "connecting" | "down", since when, and the last error). A plain value,
// copied freely between threads; TunnelSupervisor (vma/tunnel) produces it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace mk::vma {

struct TunnelState {
  std::string state;   // "up" | "connecting" | "down"
  int64_t since;       // Unix seconds when it entered this state
  std::optional<std::string> error;
};

}  // namespace mk::vma
