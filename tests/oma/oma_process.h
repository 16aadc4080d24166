// OmaProcess: the `oma` binary of this build, for tests that need the real process (kill
// it, run a second command beside it, read its log).
//
// Owns the process. Not thread-safe.
#pragma once

#include <string>
#include <vector>

#include "common/subprocess.h"

namespace mk::oma::test {

// `oma` in data directory `data` on free loopback ports (API, GUI, NBD), fast polling,
// strict replies, output to `log`. The constructor returns once the API listens (`port`);
// the destructor stops the process (SIGTERM, then SIGKILL). `extra` is appended to the
// command line. Throws mk::Error with the log's tail if it exits or never listens.
struct OmaProcess {
  OmaProcess(const std::string& data, const std::string& vma_url, const std::string& log,
             const std::vector<std::string>& extra = {});
  Subprocess process;
  int port = 0;
};

}  // namespace mk::oma::test
