#include "support/migratekit_runner.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <csignal>

#include "common/error.h"
#include "support/files.h"
#include "support/temp_dir.h"

#ifndef MIGRATEKIT_BIN
#error "MIGRATEKIT_BIN must name the migratekit binary (see tests/support/CMakeLists.txt)"
#endif

namespace mk::test {

std::string migratekit_path() { return MIGRATEKIT_BIN; }

std::string describe_command(const std::vector<std::string>& args) {
  return fmt::format("migratekit {}", fmt::join(args, " "));
}

mk::Subprocess start_migratekit(const std::vector<std::string>& args, const std::string& stdout_path,
                                const std::string& stderr_path) {
  std::vector<std::string> argv{migratekit_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  mk::SpawnOptions spawn;
  spawn.stdout_path = stdout_path;
  spawn.stderr_path = stderr_path;
  return mk::Subprocess::spawn(argv, spawn);
}

RunResult run_migratekit(const std::vector<std::string>& args, std::chrono::milliseconds timeout) {
  TempDir dir("mk-run");
  std::string out_path = dir.file("stdout"), err_path = dir.file("stderr");
  mk::Subprocess p = start_migratekit(args, out_path, err_path);
  std::optional<int> status = p.wait_for(timeout);
  if (!status) {
    p.signal(SIGKILL);
    p.wait();
    throw Error(fmt::format("{} did not finish within {} ms; killed. stdout:\n{}\nstderr:\n{}",
                            describe_command(args), timeout.count(), read_file(out_path), read_file(err_path)));
  }
  return RunResult{*status, read_file(out_path), read_file(err_path)};
}

}  // namespace mk::test
