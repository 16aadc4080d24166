// vma: the VMware Migration Appliance. A small dispatcher over its subcommands:
//   vma run ...    the daemon (API for the OMA, replication jobs) — run_command.h
//   vma pair ...   import an OMA pairing bundle and enrol — pairing/pair_command.h
//   vma status ... the running VMA's health and tunnels — status_command.h
// Built twice: `vma`, the product, and `vma-lab` (MK_VMA_LAB_PATHS=1), the same program
// with the lab paths of run_command.h's RunCommandBuild, for tests and the demo only.
#include <cstdio>
#include <cstring>

#include "engine/tls_policy.h"
#include "vma/pairing/pair_command.h"
#include "vma/run_command.h"
#include "vma/status_command.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: vma COMMAND [options]\n"
               "  run     the VMA daemon (vma run --help)\n"
               "  pair    import an OMA pairing bundle and enrol with the OMA (vma pair --help)\n"
               "  status  the running VMA's health and each SSH tunnel (vma status --help)\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  // `vma run` copies into nbds:// exports named by the OMA at run time: always TLS.
  mk::engine::apply_tls_cipher_policy(argc, argv, argc > 1 && std::strcmp(argv[1], "run") == 0);
  if (argc < 2) return usage();
#if MK_VMA_LAB_PATHS
  constexpr mk::vma::RunCommandBuild build{.lab_paths = true};
#else
  constexpr mk::vma::RunCommandBuild build{};
#endif
  if (std::strcmp(argv[1], "run") == 0) return mk::vma::run_command(argc - 1, argv + 1, {}, build);
  if (std::strcmp(argv[1], "pair") == 0) return mk::vma::run_pair(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "status") == 0) return mk::vma::run_status(argc - 1, argv + 1);
  if (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    usage();
    return 0;
  }
  std::fprintf(stderr, "vma: unknown command \"%s\"\n", argv[1]);
  return usage();
}
