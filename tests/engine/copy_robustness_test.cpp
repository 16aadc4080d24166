// What an operator relies on when things go wrong: --verify catches a target that does
// not hold what was written, progress is measured against the plan, and I/O errors are
// retried or reported precisely. (Checkpoints and restarts: copy_recovery_test.cpp.)
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "copy_fixture.h"
#include "support/nbdkit_log.h"
#include "support/net.h"

namespace mk::test {
namespace {

using mk::KiB;
using mk::MiB;
using nlohmann::json;

// The JSON objects of a --progress-json output, one per line; fails on a bad line.
std::vector<json> progress_lines(const std::string& path) {
  std::vector<json> lines;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);) {
    lines.push_back(json::parse(line));  // throws, failing the test, on a malformed line
  }
  return lines;
}

// The ETA of a line follows from its figures: what is left at its throughput. The line
// carries the throughput in whole bytes/s (truncated), the ETA from the exact figure, so
// the ETA lies between left/(throughput + 1) and left/throughput. The last line (the
// final one, whatever the outcome) has no ETA.
void expect_eta_follows_from_throughput(const std::vector<json>& lines) {
  for (size_t i = 0; i < lines.size(); ++i) {
    const json& j = lines[i];
    double eta = j["eta_seconds"].get<double>();
    uint64_t left = j["bytes_total"].get<uint64_t>() - std::min(j["bytes_done"].get<uint64_t>(),
                                                                j["bytes_total"].get<uint64_t>());
    auto bps = j["throughput_bps"].get<uint64_t>();
    if (i + 1 == lines.size() || left == 0) {
      EXPECT_EQ(eta, 0.0) << j.dump();
    } else if (bps >= 1) {
      EXPECT_LE(eta, double(left) / double(bps) * (1 + 1e-12)) << j.dump();
      EXPECT_GE(eta, double(left) / double(bps + 1) * (1 - 1e-12)) << j.dump();
    }
  }
}

// Checks the fields of every line and that bytes_done never goes backwards.
void expect_well_formed(const std::vector<json>& lines) {
  uint64_t last_done = 0;
  for (const json& j : lines) {
    for (const char* field : {"bytes_done", "bytes_total", "bytes_skipped"}) {
      ASSERT_TRUE(j.contains(field) && j[field].is_number_unsigned()) << field << " in " << j.dump();
    }
    for (const char* field : {"throughput_bps", "eta_seconds"}) {
      ASSERT_TRUE(j.contains(field) && j[field].is_number()) << field << " in " << j.dump();
      EXPECT_GE(j[field].get<double>(), 0) << j.dump();
    }
    ASSERT_TRUE(j.contains("phase") && j["phase"].is_string()) << j.dump();
    EXPECT_LE(j["bytes_done"].get<uint64_t>(), j["bytes_total"].get<uint64_t>()) << j.dump();
    EXPECT_GE(j["bytes_done"].get<uint64_t>(), last_done) << j.dump();
    last_done = j["bytes_done"].get<uint64_t>();
  }
  expect_eta_follows_from_throughput(lines);
}

// ---------------------------------------------------------------------------------
// --verify

// A target whose storage lies: nbdkit's eval plugin stores writes in a file with dd,
// but any write covering `bad_offset` leaves the byte 'Z' there instead of the data.
// Reads return what is really stored, as a faulty disk or controller would.
NbdkitOptions lying_target(const std::string& path, uint64_t size, uint64_t bad_offset) {
  std::string pwrite = fmt::format(
      "dd of={0} seek=$4 oflag=seek_bytes conv=notrunc iflag=fullblock bs=$3 count=1 status=none || exit 1\n"
      "if [ $4 -le {1} ] && [ $(($4 + $3)) -gt {1} ]; then\n"
      "  printf Z | dd of={0} seek={1} oflag=seek_bytes conv=notrunc status=none || exit 1\n"
      "fi\n",
      path, bad_offset);
  return {.plugin = "eval",
          .args = {fmt::format("get_size=echo {}", size),
                   fmt::format("pread=dd if={} skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none", path),
                   "pwrite=" + pwrite}};
}

class CopyVerify : public CopyTest {};

TEST_F(CopyVerify, CatchesATargetThatDoesNotHoldWhatWasWritten) {
  const uint64_t size = 1 * MiB, bad = 300001;
  std::string source = make_disk("source.img", size, {{0, size}});
  write_at(source, bad, "A");
  std::string target = file("target.img");
  create_sparse_file(target, size);
  NbdkitServer dst(lying_target(target, size, bad));
  RunResult r = copy(serve(source).uri(), dst.uri(), {"--verify"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(fmt::format("first at offset {}", bad)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(dst.uri()), std::string::npos) << r.err;
  EXPECT_EQ(first_difference(source, target), bad);  // the double did what it claims
}

TEST_F(CopyVerify, PassesOnAnHonestTargetOfTheSameKind) {
  const uint64_t size = 1 * MiB;
  std::string source = make_disk("source.img", size, {{0, size}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  NbdkitServer dst(lying_target(target, size, size + 1));  // never triggers
  RunResult r = copy(serve(source).uri(), dst.uri(), {"--verify"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("target matches source"), std::string::npos) << r.out;
  EXPECT_TRUE(files_identical(source, target));
}

// ---------------------------------------------------------------------------------
// --progress-json

class CopyProgress : public CopyTest {
 protected:
  // 8 MiB capacity, 1 MiB of data in two 512K areas: the plan is 1 MiB on a fresh target.
  std::string sparse_source() { return make_disk("source.img", 8 * MiB, {{1 * MiB, 512 * KiB}, {5 * MiB, 512 * KiB}}); }
};

TEST_F(CopyProgress, FinalLineCountsThePlanNotTheCapacity) {
  std::string source = sparse_source();
  std::string target = file("target.img");
  create_sparse_file(target, 8 * MiB);
  std::string progress = file("progress.json");
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--target-is-zero", "--progress-json", progress});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
  std::vector<json> lines = progress_lines(progress);
  ASSERT_FALSE(lines.empty());
  expect_well_formed(lines);
  const json& last = lines.back();
  EXPECT_EQ(last["phase"], "done") << last.dump();
  EXPECT_EQ(last["bytes_total"].get<uint64_t>(), 1 * MiB) << last.dump();
  EXPECT_EQ(last["bytes_done"].get<uint64_t>(), 1 * MiB) << last.dump();
  EXPECT_EQ(last["bytes_skipped"].get<uint64_t>(), 7 * MiB) << last.dump();
}

TEST_F(CopyProgress, ReusedTargetCountsZeroedBytesToo) {
  std::string source = sparse_source();
  std::string target = file("target.img");
  write_random_at(target, 0, 8 * MiB, 4);
  std::string progress = file("progress.json");
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--progress-json", progress});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source, target));
  std::vector<json> lines = progress_lines(progress);
  ASSERT_FALSE(lines.empty());
  expect_well_formed(lines);
  const json& last = lines.back();
  EXPECT_EQ(last["phase"], "done") << last.dump();
  EXPECT_EQ(last["bytes_total"].get<uint64_t>(), 8 * MiB) << last.dump();  // 1 MiB data + 7 MiB zeroed
  EXPECT_EQ(last["bytes_done"].get<uint64_t>(), 8 * MiB) << last.dump();
  EXPECT_EQ(last["bytes_skipped"].get<uint64_t>(), 0u) << last.dump();
}

TEST_F(CopyProgress, PhasesFollowEachOtherWithVerify) {
  std::string source = sparse_source();
  std::string target = file("target.img");
  write_random_at(target, 0, 8 * MiB, 6);
  std::string progress = file("progress.json");
  RunResult r = copy(serve(source).uri(), serve(target).uri(), {"--verify", "--progress-json", progress});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<json> lines = progress_lines(progress);
  expect_well_formed(lines);
  std::vector<std::string> phases;
  for (const json& j : lines) {
    if (phases.empty() || phases.back() != j["phase"]) phases.push_back(j["phase"]);
  }
  if (!phases.empty() && phases.front() == "planning") phases.erase(phases.begin());
  EXPECT_EQ(phases, (std::vector<std::string>{"copying", "verifying", "done"}));
}

TEST_F(CopyProgress, WritesToAnInheritedDescriptor) {
  std::string source = sparse_source();
  std::string target = file("target.img");
  create_sparse_file(target, 8 * MiB);
  std::string src_uri = serve(source).uri(), dst_uri = serve(target).uri();
  std::string progress = file("progress.json");
  // Opened without O_CLOEXEC so that migratekit inherits it (servers are already up).
  int fd = ::open(progress.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  RunResult r = copy(src_uri, dst_uri, {"--target-is-zero", "--progress-json", fmt::format("fd:{}", fd)});
  ::close(fd);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  std::vector<json> lines = progress_lines(progress);
  ASSERT_FALSE(lines.empty());
  expect_well_formed(lines);
  EXPECT_EQ(lines.back()["phase"], "done");
  EXPECT_EQ(lines.back()["bytes_done"].get<uint64_t>(), 1 * MiB);
}

// Progress is advisory: a closed progress pipe does not kill the copy.
TEST_F(CopyProgress, AClosedProgressPipeDoesNotKillTheCopy) {
  std::string source = sparse_source();
  std::string target = file("target.img");
  create_sparse_file(target, 8 * MiB);
  std::string src_uri = serve(source).uri(), dst_uri = serve(target).uri();
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);  // no O_CLOEXEC: migratekit inherits the write end
  ::close(fds[0]);            // nobody will ever read
  RunResult r = copy(src_uri, dst_uri, {"--target-is-zero", "--progress-json", fmt::format("fd:{}", fds[1])});
  ::close(fds[1]);
  EXPECT_NE(r.exit_code, 128 + SIGPIPE) << "killed by SIGPIPE";
  if (r.exit_code == 0) {
    EXPECT_TRUE(files_identical(source, target));
  } else {
    EXPECT_EQ(r.exit_code, 1) << describe(r);
    EXPECT_NE(r.err.find("progress"), std::string::npos) << r.err;
  }
}

// ---------------------------------------------------------------------------------
// I/O errors (nbdkit's error filter on the source)

class CopyErrors : public CopyTest {
 protected:
  // Starts a copy, waits until the server's log shows a `type` request answered with an
  // error, removes the error filter's switch file, and waits for the copy to end.
  RunResult run_until_errors_stop(const std::string& source, const std::string& target,
                                  const std::string& server_log, const std::string& type,
                                  const std::string& error_switch) {
    std::string out = file("copy.out"), err = file("copy.err"), progress = file("progress.json");
    mk::Subprocess p = start_migratekit({"copy", source, target, "--request-size", kRequestSize, "--retries", "10",
                                         "--progress-json", progress},
                                        out, err);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // a hang guard only
    while (p.running() && !has_failed_request(server_log, type)) {
      if (std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_TRUE(has_failed_request(server_log, type)) << "no " << type << " failed: " << read_file(err);
    std::filesystem::remove(error_switch);
    std::optional<int> status = p.wait_for(std::chrono::seconds(60));
    if (!status) ADD_FAILURE() << "migratekit hung after the errors stopped";
    if (status == 0) {  // retried requests are counted once
      std::vector<json> lines = progress_lines(progress);
      expect_well_formed(lines);
      if (!lines.empty()) {
        EXPECT_EQ(lines.back()["bytes_done"], lines.back()["bytes_total"]) << lines.back().dump();
      }
    }
    return RunResult{status.value_or(-1), read_file(out), read_file(err)};
  }
};

// Reads fail with EIO while a switch file exists; the test removes it once the server
// (nbdkit's log filter, outside the error filter) has answered a read with the error,
// so the retry must succeed.
TEST_F(CopyErrors, TransientReadErrorIsRetried) {
  const uint64_t size = 2 * MiB;
  std::string source = make_disk("source.img", size, {{0, size}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  std::string error_switch = file("inject-eio"), server_log = file("source.log");
  write_at(error_switch, 0, "on");
  NbdkitServer& src = serve(source, {.args = {"logfile=" + server_log, "error-pread=EIO", "error-pread-rate=100%",
                                              "error-pread-file=" + error_switch},
                                     .filters = {"log", "error"}});
  RunResult r = run_until_errors_stop(src.uri(), serve(target).uri(), server_log, "Read", error_switch);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("retries"), std::string::npos) << r.out;
  EXPECT_TRUE(files_identical(source, target));
}

// Every read fails: after its retries the copy fails naming the export, the offset and
// the cause. The source has one 64K data extent, so there is exactly one read.
TEST_F(CopyErrors, PersistentReadErrorFailsNamingExportOffsetAndCause) {
  const uint64_t size = 4 * MiB, data = 3 * MiB;
  std::string source = make_disk("source.img", size, {{data, 64 * KiB}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  NbdkitServer& src = serve(source, {.args = {"error-pread=EIO", "error-pread-rate=100%"}, .filters = {"error"}});
  RunResult r = copy(src.uri(), serve(target).uri(), {"--target-is-zero", "--retries", "2"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(src.uri()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(fmt::format("at offset {}", data)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target), std::string(size, '\0'));
}

// The same for writes refused by the target (ENOSPC, as a full thin pool would).
TEST_F(CopyErrors, PersistentWriteErrorFailsNamingTheTarget) {
  const uint64_t size = 1 * MiB;
  std::string source = make_disk("source.img", size, {{0, size}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  NbdkitServer& dst = serve(target, {.args = {"error-pwrite=ENOSPC", "error-pwrite-rate=100%"}, .filters = {"error"}});
  RunResult r = copy(serve(source).uri(), dst.uri(), {"--retries", "1"});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(dst.uri()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
}

TEST_F(CopyErrors, UnreachableTargetFailsNamingIt) {
  std::string source = make_disk("source.img", 1 * MiB, {{0, 1 * MiB}});
  std::string missing = "nbd+unix:///?socket=" + file("no-server.sock");
  RunResult r = copy(serve(source).uri(), missing);
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(missing), std::string::npos) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

// Writes fail with ENOSPC while a switch file exists (a thin pool that was full and got
// extended): retried, then the copy completes.
TEST_F(CopyErrors, TransientWriteErrorIsRetried) {
  const uint64_t size = 2 * MiB;
  std::string source = make_disk("source.img", size, {{0, size}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  std::string error_switch = file("inject-enospc"), server_log = file("target.log");
  write_at(error_switch, 0, "on");
  NbdkitServer& dst = serve(target, {.args = {"logfile=" + server_log, "error-pwrite=ENOSPC",
                                              "error-pwrite-rate=100%", "error-pwrite-file=" + error_switch},
                                     .filters = {"log", "error"}});
  RunResult r = run_until_errors_stop(serve(source).uri(), dst.uri(), server_log, "Write", error_switch);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.err;
  EXPECT_TRUE(files_identical(source, target));
}

// A reused target whose write-zeroes fail: the zeroing is retried, then reported.
TEST_F(CopyErrors, PersistentWriteZeroesErrorFailsNamingTheTarget) {
  const uint64_t size = 2 * MiB;
  std::string source = make_disk("source.img", size, {{0, 64 * KiB}});
  std::string target = file("target.img");
  write_random_at(target, 0, size, 2);
  NbdkitServer& dst = serve(target, {.args = {"error-zero=EIO", "error-zero-rate=100%"}, .filters = {"error"}});
  std::string progress = file("progress.json");
  RunResult r = copy(serve(source).uri(), dst.uri(), {"--retries", "1", "--progress-json", progress});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(dst.uri()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("write-zeroes"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Input/output error"), std::string::npos) << r.err;
  // The progress stream ends saying so, for the OMA polling it.
  std::vector<json> lines = progress_lines(progress);
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["phase"], "failed") << lines.back().dump();
}

// The target refuses every flush (a storage that lost its write cache): nothing it took
// is durable, so the copy fails naming the target and the flush, its checkpoint records
// no range, and a rerun once the target flushes again copies everything. nbdkit 1.32's
// error filter cannot fail flushes, so the target is nbdkit's sh plugin over the file,
// refusing flushes while a switch file exists.
TEST_F(CopyErrors, FailedFlushRecordsNoCheckpointRangeAndTheRerunCopiesEverything) {
  const uint64_t size = 2 * MiB;
  std::string source = make_disk("source.img", size, {{0, size}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  const std::string script = file("flush-fails.sh");
  write_at(script, 0,
           "#!/bin/bash\nf=" + target +
               "\ncase \"$1\" in\n"
               "  open) echo h ;;\n"
               "  get_size) stat -L -c %s \"$f\" ;;\n"
               "  can_write|can_flush) exit 0 ;;\n"
               "  pread) dd if=\"$f\" skip=\"$4\" count=\"$3\" iflag=skip_bytes,count_bytes status=none ;;\n"
               "  pwrite) dd of=\"$f\" seek=\"$4\" oflag=seek_bytes conv=notrunc status=none ;;\n"
               "  flush) [ -e " + file("fail-flush") + " ] || exit 0\n"
               "         echo 'EIO the storage lost its write cache' >&2; exit 1 ;;\n"
               "  *) exit 2 ;;\n"
               "esac\n");
  std::filesystem::permissions(script, std::filesystem::perms::owner_all);
  const std::string checkpoint = file("copy.checkpoint"), log = file("target.log");
  write_at(file("fail-flush"), 0, "on");
  NbdkitServer dst({.plugin = "sh", .args = {script, "logfile=" + log}, .filters = {"log"}});
  std::string src = serve(source).uri();
  RunResult r = copy(src, dst.uri(), {"--retries", "1", "--checkpoint", checkpoint});
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(dst.uri()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("flush"), std::string::npos) << r.err;
  std::ifstream in(checkpoint);
  std::string header, line;
  std::getline(in, header);
  EXPECT_FALSE(std::getline(in, line)) << "a range recorded although no flush succeeded: " << line;
  const uint64_t first_run = total_count(requests_of(parse_nbdkit_log(log), "Write"));

  std::filesystem::remove(file("fail-flush"));
  RunResult again = copy(src, dst.uri(), {"--checkpoint", checkpoint});
  ASSERT_EQ(again.exit_code, 0) << describe(again);
  EXPECT_TRUE(files_identical(source, target));
  EXPECT_EQ(total_count(requests_of(parse_nbdkit_log(log), "Write")) - first_run, size)
      << "the rerun skipped data that was never flushed";
}

}  // namespace
}  // namespace mk::test
