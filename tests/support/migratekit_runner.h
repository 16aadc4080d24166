// Running the migratekit tool that this build produced, as a test would from a shell.
//
// run_migratekit() starts the binary by argv (no shell), captures standard output and
// standard error (through files in a private temporary directory) and waits with a
// timeout; a run that outlives it is killed by PID and reported as an mk::Error.
// start_migratekit() leaves the process running for tests that signal it (kill -9).
// Free functions; thread-safe.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace mk::test {

struct RunResult {
  int exit_code = -1;  // as a shell reports it: 128+N when killed by signal N
  std::string out;     // standard output
  std::string err;     // standard error
};

// Absolute path of the migratekit binary under test.
std::string migratekit_path();

// Runs `migratekit args...`. Throws mk::Error (with the command and its output so far)
// if it does not exit within `timeout`.
RunResult run_migratekit(const std::vector<std::string>& args,
                         std::chrono::milliseconds timeout = std::chrono::seconds(60));

// Starts `migratekit args...` with stdout and stderr appended to the given files
// (which the caller owns; "" = /dev/null). Descriptors the caller opened without
// O_CLOEXEC are inherited (for --progress-json fd:N).
mk::Subprocess start_migratekit(const std::vector<std::string>& args, const std::string& stdout_path,
                                const std::string& stderr_path);

// "migratekit copy a b" for messages.
std::string describe_command(const std::vector<std::string>& args);

}  // namespace mk::test
