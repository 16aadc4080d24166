// What the VMA's health reports about its SSH control tunnel to the OMA: the protocol's
// TunnelHealth (state up/connecting/down, since when, why). The tunnel supervisor
// (src/vma/tunnel/) provides it through a TunnelStateProvider; without a tunnel the VMA
// reports "down" with error "no tunnel configured". A provider must be callable from
// any thread.
#pragma once

#include <functional>

#include "protocol/messages.h"

namespace mk::vma {

using TunnelStateProvider = std::function<protocol::TunnelHealth()>;

}  // namespace mk::vma
