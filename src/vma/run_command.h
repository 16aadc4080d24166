// `vma run`: parses the options into a VmaConfig, runs the Vma service until SIGINT or
// SIGTERM. Returns the process exit status (0, 1 failure, 2 bad arguments).
#pragma once

#include "vma/tunnel_state.h"

namespace mk::vma {

// What a build of `vma` may do beyond the product. The installed `vma` has none of it;
// `vma-lab` (built beside it for tests, the demo and benchmarks, never installed) has it.
struct RunCommandBuild {
  // --lab-flat-datastore: read disks from flat files on a mounted datastore (vcsim's)
  // instead of through VDDK. Off: the option is hidden from --help and refused, from the
  // command line and from a configuration file alike.
  bool lab_paths = false;
};

// argv[0] is "run". `tunnel` is the tunnel supervisor's state, if one runs.
int run_command(int argc, char** argv, TunnelStateProvider tunnel = {}, RunCommandBuild build = {});

}  // namespace mk::vma
