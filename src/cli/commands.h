// Subcommands of the `migratekit` command-line tool. Each registers its options on the
// CLI11 app and returns the function that runs it; that function returns the process
// exit status (0 success, 1 failure) and throws mk::UsageError for bad input (status 2).
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace mk::cli {

using Runner = std::function<int()>;

Runner add_copy_command(CLI::App& app);
// vms, replicate, jobs: over the OMA's REST API (oma_commands.cpp). Its runner returns
// -1 when none of them was given.
Runner add_oma_commands(CLI::App& app);

}  // namespace mk::cli
