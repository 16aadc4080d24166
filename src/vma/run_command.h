// `vma run`: parses the options into a VmaConfig, runs the Vma service until SIGINT or
// SIGTERM. Returns the process exit status (0, 1 failure, 2 bad arguments).
#pragma once

#include "vma/tunnel_state.h"

namespace mk::vma {

// argv[0] is "run". `tunnel` is the tunnel supervisor's state, if one runs.
int run_command(int argc, char** argv, TunnelStateProvider tunnel = {});

}  // namespace mk::vma
