// CopyTest: the fixture of the copy engine's integration tests. Each test gets a private
// temporary directory for its disk images; it serves them with real nbdkit servers and
// runs the migratekit binary this build produced.
//
// Helpers build the images (sparse files with data at chosen places), serve them, and
// write changed-areas files. The fixture owns its directory and the servers it started
// (stopped by PID at the end of the test). Not thread-safe.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/units.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"

namespace mk::test {

// A size that is a multiple of neither 4096 nor the request size (64K).
inline constexpr uint64_t kOddSize = 5 * mk::MiB + 1234;
inline constexpr const char* kRequestSize = "64K";

struct Area {
  uint64_t start, length;
};

class CopyTest : public ::testing::Test {
 protected:
  std::string file(const std::string& name) const { return dir_.file(name); }

  // Serves `path` read-write with nbdkit's file plugin on a Unix socket; `options`
  // adds filters, TLS and the like (its plugin and file= argument are set here).
  NbdkitServer& serve(const std::string& path, NbdkitOptions options = {}) {
    options.plugin = "file";
    options.args.insert(options.args.begin(), "file=" + path);
    servers_.push_back(std::make_unique<NbdkitServer>(std::move(options)));
    return *servers_.back();
  }

  // migratekit copy SOURCE TARGET --request-size 64K EXTRA...
  RunResult copy(const std::string& source, const std::string& target, std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"copy", source, target, "--request-size", kRequestSize};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_migratekit(args);
  }

  // A changed-areas file (vSphere's DiskChangeExtent fields) with the given areas.
  std::string areas_file(const std::string& name, const std::vector<Area>& areas) {
    nlohmann::json j = nlohmann::json::array();
    for (const Area& a : areas) j.push_back({{"start", a.start}, {"length", a.length}});
    write_at(file(name), 0, j.dump());
    return file(name);
  }

  // A sparse disk of `size` with random data at `areas` (seeded by `seed`).
  std::string make_disk(const std::string& name, uint64_t size, const std::vector<Area>& areas, uint64_t seed = 1) {
    create_sparse_file(file(name), size);
    for (const Area& a : areas) write_random_at(file(name), a.start, a.length, seed++);
    return file(name);
  }

 private:
  TempDir dir_{"mk-copy"};
  std::vector<std::unique_ptr<NbdkitServer>> servers_;
};

// "exit N\nstdout: ...\nstderr: ..." for assertion messages.
inline std::string describe(const RunResult& r) {
  return "exit " + std::to_string(r.exit_code) + "\nstdout: " + r.out + "\nstderr: " + r.err;
}

}  // namespace mk::test
