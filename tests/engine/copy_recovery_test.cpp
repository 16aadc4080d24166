// Interrupted copies: a copy killed with SIGKILL or stopped with SIGTERM resumes from its
// checkpoint, --verify after a resume still covers the whole plan, a server that
// crashes and comes back in the middle of a copy is reconnected to, and a connection
// that stops answering is dropped after --timeout.
//
// These copies run against a target slowed by nbdkit's delay filter, with one request
// in flight (the target crash: 64, into a write-back cache), so that they last long
// enough to be interrupted; the test waits for evidence (progress and checkpoint
// lines), never for a fixed time.
#include <fmt/format.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cstring>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "copy_fixture.h"

namespace mk::test {
namespace {

using mk::MiB;
using nlohmann::json;

// The "start length" ranges recorded in a checkpoint file (after its header line).
std::vector<Area> checkpoint_ranges(const std::string& path) {
  std::ifstream in(path);
  std::vector<Area> ranges;
  std::string line;
  for (bool header = true; std::getline(in, line); header = false) {
    Area a{};
    std::istringstream fields(line);
    if (!header && fields >> a.start >> a.length) ranges.push_back(a);
  }
  return ranges;
}

uint64_t last_bytes_done(const std::string& progress) {
  std::ifstream in(progress);  // not there yet before migratekit opened it
  uint64_t done = 0;
  for (std::string line; std::getline(in, line);) {
    json j = json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("bytes_done")) done = j["bytes_done"].get<uint64_t>();
  }
  return done;
}

class CopyResume : public CopyTest {
 protected:
  static constexpr uint64_t kSize = 6 * MiB;

  void SetUp() override {
    source_ = make_disk("source.img", kSize, {{0, kSize}});
    target_ = file("target.img");
    create_sparse_file(target_, kSize);
    target_server_ = &serve(target_, {.args = {"delay-write=40ms"}, .filters = {"delay"}});
    checkpoint_ = file("copy.checkpoint");
    progress_ = file("progress.json");
    source_server_ = &serve(source_);
    args_ = {"copy", source_server_->uri(), target_server_->uri(), "--request-size", kRequestSize,
             "--requests", "1", "--checkpoint", checkpoint_, "--progress-json", progress_};
  }

  // Starts the copy, waits until progress shows bytes done and the checkpoint holds a
  // range, then sends `sig`. Returns the exit status.
  int interrupt_copy(int sig) {
    mk::Subprocess p = start_migratekit(args_, file("first.out"), file("first.err"));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // a hang guard only
    while (p.running() && !(last_bytes_done(progress_) > 0 && !checkpoint_ranges(checkpoint_).empty())) {
      if (std::chrono::steady_clock::now() > deadline) {
        ADD_FAILURE() << "no checkpoint progress: " << read_file(file("first.err"));
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!p.running()) {
      ADD_FAILURE() << "the copy ended before it could be interrupted; slow the target down. "
                    << read_file(file("first.out")) << read_file(file("first.err"));
      return -1;
    }
    p.signal(sig);
    return p.wait();
  }

  std::string source_, target_, checkpoint_, progress_;
  // Starts the copy, kills `server` once `ready_to_kill()`, starts it again, and checks
  // that the copy completes with `target` equal to the source.
  void crash_and_restart(NbdkitServer& server, const std::string& target, const std::function<bool()>& ready_to_kill);

  NbdkitServer* source_server_ = nullptr;
  NbdkitServer* target_server_ = nullptr;
  std::vector<std::string> args_;
};

TEST_F(CopyResume, AfterKillNineTheRerunCompletesTheCopy) {
  ASSERT_EQ(interrupt_copy(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(first_difference(source_, target_).has_value()) << "the killed copy was already complete";
  RunResult r = run_migratekit(args_);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("resumed"), std::string::npos) << r.out;
  EXPECT_TRUE(files_identical(source_, target_));
  EXPECT_FALSE(std::filesystem::exists(checkpoint_)) << "the checkpoint outlived a successful copy";
  // The rerun's progress ends at the whole plan, resumed bytes included.
  std::ifstream in(progress_);
  std::string line, last;
  while (std::getline(in, line)) last = line;
  json j = json::parse(last);
  EXPECT_EQ(j["phase"], "done") << last;
  EXPECT_EQ(j["bytes_done"].get<uint64_t>(), kSize) << last;
  EXPECT_EQ(j["bytes_total"].get<uint64_t>(), kSize) << last;
}

// An incremental pass resumes too, and still copies nothing outside its changed areas.
TEST_F(CopyResume, IncrementalPassResumesWithinItsAreas) {
  std::vector<Area> areas{{0, 3 * MiB}, {4 * MiB, 2 * MiB}};
  args_.insert(args_.end(), {"--changed-areas", areas_file("areas.json", areas)});
  ASSERT_EQ(interrupt_copy(SIGKILL), 128 + SIGKILL);
  RunResult r = run_migratekit(args_);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("resumed"), std::string::npos) << r.out;
  for (const Area& a : areas) EXPECT_EQ(read_at(target_, a.start, a.length), read_at(source_, a.start, a.length));
  EXPECT_EQ(read_at(target_, 3 * MiB, 1 * MiB), std::string(1 * MiB, '\0')) << "written outside the changed areas";
}

// kill -9 can cut the checkpoint's last line in half; the rerun ignores that line.
TEST_F(CopyResume, TornLastCheckpointLineIsIgnored) {
  ASSERT_EQ(interrupt_copy(SIGKILL), 128 + SIGKILL);
  std::ofstream(checkpoint_, std::ios::app) << "3145728 65";
  RunResult r = run_migratekit(args_);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source_, target_));
}

TEST_F(CopyResume, SigtermStopsWithStatusOneKeepingTheCheckpoint) {
  ASSERT_EQ(interrupt_copy(SIGTERM), 1) << read_file(file("first.err"));
  EXPECT_FALSE(read_file(file("first.err")).empty());
  ASSERT_FALSE(checkpoint_ranges(checkpoint_).empty()) << "SIGTERM lost the checkpoint";
  RunResult r = run_migratekit(args_);
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_NE(r.out.find("resumed"), std::string::npos) << r.out;
  EXPECT_TRUE(files_identical(source_, target_));
}

// A range the checkpoint says is done is not copied again, but --verify must still
// compare it: here the target lost a byte of it while migratekit was down.
TEST_F(CopyResume, VerifyAfterResumeCoversTheResumedRanges) {
  ASSERT_EQ(interrupt_copy(SIGKILL), 128 + SIGKILL);
  std::vector<Area> done = checkpoint_ranges(checkpoint_);
  ASSERT_FALSE(done.empty());
  uint64_t bad = done.front().start + done.front().length / 2;
  std::string byte = read_at(target_, bad, 1);
  byte[0] = static_cast<char>(~byte[0]);
  write_at(target_, bad, byte);

  std::vector<std::string> args = args_;
  args.push_back("--verify");
  RunResult r = run_migratekit(args);
  EXPECT_EQ(r.exit_code, 1) << describe(r);
  EXPECT_NE(r.err.find(fmt::format("first at offset {}", bad)), std::string::npos) << r.err;
}

// A damaged checkpoint (a range past the disk) is refused, never trusted.
TEST_F(CopyResume, CheckpointRangePastTheDiskIsNotTrusted) {
  ASSERT_EQ(interrupt_copy(SIGKILL), 128 + SIGKILL);
  ASSERT_TRUE(first_difference(source_, target_).has_value()) << "the killed copy was already complete";
  std::string text = read_file(checkpoint_);
  std::string header = text.substr(0, text.find('\n') + 1);
  create_sparse_file(checkpoint_, 0);
  write_at(checkpoint_, 0, header + "0 99999999999\n");
  RunResult r = run_migratekit(args_);
  if (r.exit_code == 0) {
    EXPECT_TRUE(files_identical(source_, target_)) << "success reported on an incomplete target: " << describe(r);
  } else {
    EXPECT_EQ(r.exit_code, 2) << describe(r);
    EXPECT_NE(r.err.find(checkpoint_), std::string::npos) << r.err;
  }
}

TEST_F(CopyResume, CheckpointOfAnotherPassIsRefused) {
  write_at(checkpoint_, 0,
           R"({"migratekit_checkpoint":1,"plan":"other","disk_size":1,"target":"x","target_is_zero":false})"
           "\n0 65536\n");
  RunResult r = run_migratekit(args_);
  EXPECT_EQ(r.exit_code, 2) << describe(r);
  EXPECT_NE(r.err.find(checkpoint_), std::string::npos) << r.err;
  EXPECT_EQ(read_file(target_), std::string(kSize, '\0'));
}

// Bytes the checkpoint records as flushed.
uint64_t checkpointed_bytes(const std::string& checkpoint) {
  uint64_t n = 0;
  for (const Area& a : checkpoint_ranges(checkpoint)) n += a.length;
  return n;
}

// A server crashes (SIGKILL) in the middle of the copy and is started again on the same
// socket: the engine reconnects, redoes what was lost, and finishes.
//
// The target keeps the writes it confirmed in a volatile cache (nbdkit's cache filter,
// cache=writeback) until a flush writes them to the file, as a server with a write-back
// cache does: the crash loses every write confirmed since the last flush, which the
// engine must copy again (nbdkit's file plugin alone would have them in the file
// already, and a copy that forgot them would still pass). The engine runs with its
// default 64 requests in flight; the target is killed once the copy has confirmed more
// than its checkpoint holds as flushed, so some confirmed writes are surely lost.
TEST_F(CopyResume, TargetServerCrashAndRestartIsReconnected) {
  std::string target = file("cached-target.img");
  create_sparse_file(target, kSize);
  // 16 writes at a time (nbdkit's threads), 500 ms each: about 3 s for the copy.
  NbdkitServer& server =
      serve(target, {.args = {"delay-write=500ms", "cache=writeback"}, .filters = {"delay", "cache"}});
  args_ = {"copy",           source_server_->uri(), server.uri(), "--request-size", kRequestSize, "--checkpoint",
           checkpoint_,      "--progress-json",     progress_};
  crash_and_restart(server, target, [this] {
    uint64_t done = last_bytes_done(progress_);
    return done > 0 && done > checkpointed_bytes(checkpoint_);
  });
}
TEST_F(CopyResume, SourceServerCrashAndRestartIsReconnected) {
  crash_and_restart(*source_server_, target_, [this] { return last_bytes_done(progress_) > 0; });
}

void CopyResume::crash_and_restart(NbdkitServer& server, const std::string& target,
                                   const std::function<bool()>& ready_to_kill) {
  mk::Subprocess p = start_migratekit(args_, file("copy.out"), file("copy.err"));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // a hang guard only
  while (p.running() && !ready_to_kill()) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << read_file(file("copy.err"));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(p.running()) << "the copy ended before the server could be killed";
  server.signal(SIGKILL);
  server.restart();
  std::optional<int> status = p.wait_for(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "migratekit hung after the target came back";
  std::string out = read_file(file("copy.out")), err = read_file(file("copy.err"));
  ASSERT_EQ(*status, 0) << out << err;
  EXPECT_NE(out.find("reconnect"), std::string::npos) << out;
  auto diff = first_difference(source_, target);
  EXPECT_FALSE(diff.has_value()) << "the target differs from the source at offset " << diff.value_or(0)
                                 << ": writes lost in the crash were not copied again";
  // Progress never claims more than the plan, and ends at the plan exactly, although
  // some writes were done twice.
  std::ifstream in(progress_);
  std::string line, last;
  while (std::getline(in, line)) {
    json j = json::parse(line);
    EXPECT_LE(j["bytes_done"].get<uint64_t>(), j["bytes_total"].get<uint64_t>()) << line;
    last = line;
  }
  json j = json::parse(last);
  EXPECT_EQ(j["phase"], "done") << last;
  EXPECT_EQ(j["bytes_done"].get<uint64_t>(), kSize) << last;
}

// Sends a command to nbdkit's pause filter and waits for its acknowledgement ('p' ->
// 'P' once the requests already received are done, 'r' -> 'R').
void pause_filter_command(const std::string& control_socket, char command) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(control_socket.size(), sizeof addr.sun_path);
  std::memcpy(addr.sun_path, control_socket.c_str(), control_socket.size() + 1);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << control_socket;
  char reply = 0;
  ASSERT_EQ(::write(fd, &command, 1), 1);
  ASSERT_EQ(::read(fd, &reply, 1), 1);
  ::close(fd);
  ASSERT_EQ(reply, std::toupper(command));
}

size_t connects(const std::string& server_log) {
  std::ifstream in(server_log);
  size_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.find(" Connect export=") != std::string::npos;
  return n;
}

// A target that stops answering (nbdkit's pause filter holds every request): after
// --timeout the engine drops the connection and opens another; once the server answers
// again the copy completes.
class CopyTimeout : public CopyTest {};

TEST_F(CopyTimeout, HungTargetConnectionIsDroppedAndReplaced) {
  const uint64_t size = 4 * MiB;
  std::string source = make_disk("source.img", size, {{0, size}});
  std::string target = file("target.img");
  create_sparse_file(target, size);
  std::string control = file("pause.sock"), server_log = file("target.log"), progress = file("progress.json");
  NbdkitServer& dst = serve(target, {.args = {"logfile=" + server_log, "pause-control=" + control, "delay-write=20ms"},
                                     .filters = {"log", "pause", "delay"}});
  mk::Subprocess p = start_migratekit({"copy", serve(source).uri(), dst.uri(), "--request-size", kRequestSize,
                                       "--requests", "1", "--timeout", "1", "--progress-json", progress},
                                      file("copy.out"), file("copy.err"));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // a hang guard only
  while (p.running() && last_bytes_done(progress) == 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << read_file(file("copy.err"));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(p.running()) << "the copy ended before the target could be paused";
  pause_filter_command(control, 'p');
  size_t before = connects(server_log);
  while (p.running() && connects(server_log) == before) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "no new connection to the hung target: "
                                                          << read_file(file("copy.err"));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  pause_filter_command(control, 'r');
  std::optional<int> status = p.wait_for(std::chrono::seconds(60));
  ASSERT_TRUE(status.has_value()) << "migratekit hung after the target answered again";
  std::string out = read_file(file("copy.out")), err = read_file(file("copy.err"));
  ASSERT_EQ(*status, 0) << out << err;
  EXPECT_NE(out.find("reconnect"), std::string::npos) << out;
  EXPECT_TRUE(files_identical(source, target));
}

}  // namespace
}  // namespace mk::test
