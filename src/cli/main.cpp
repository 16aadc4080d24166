// migratekit: the copy engine's command-line tool.
#include <CLI/CLI.hpp>

#include <cstdio>

#include "cli/commands.h"
#include "common/error.h"
#include "common/log.h"
#include "engine/tls_policy.h"

int main(int argc, char** argv) {
  mk::engine::apply_tls_cipher_policy(argc, argv);

  CLI::App app{"MigrateKit OSSEA: move VMware VMs into CloudStack with near-zero downtime"};
  app.require_subcommand(1);
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log debugging details");
  mk::cli::Runner copy = mk::cli::add_copy_command(app);
  mk::cli::Runner oma = mk::cli::add_oma_commands(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "migratekit: %s (see --help)\n", e.what());
    return 2;
  }
  if (verbose) mk::log::set_level(mk::log::Level::Debug);
  try {
    if (app.got_subcommand("copy")) return copy();
    if (int rc = oma(); rc >= 0) return rc;
  } catch (const mk::UsageError& e) {
    std::fprintf(stderr, "migratekit: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "migratekit: %s\n", e.what());
    return 1;
  }
  return 2;
}
