// Unit tests for src/engine/progress.h: counters, snapshots, JSON lines.
#include "engine/progress.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "unit_temp_dir.h"

namespace mk::engine {
namespace {

using namespace std::chrono_literals;

const std::vector<std::string> kFields{"phase",          "bytes_done",  "bytes_total", "bytes_skipped",
                                       "throughput_bps", "eta_seconds", "elapsed_seconds"};

std::vector<nlohmann::json> json_lines(const std::string& text) {
  std::vector<nlohmann::json> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    EXPECT_NE(nl, std::string::npos) << "last line without newline: " << text.substr(pos);
    if (nl == std::string::npos) break;
    out.push_back(nlohmann::json::parse(text.substr(pos, nl - pos)));
    pos = nl + 1;
  }
  return out;
}

// Everything a pipe's read end gives until EOF; closes it.
std::string read_all_and_close(int fd) {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, n);
  ::close(fd);
  return text;
}

void expect_all_fields(const nlohmann::json& j) {
  ASSERT_TRUE(j.is_object()) << j.dump();
  for (const auto& f : kFields) EXPECT_TRUE(j.contains(f)) << "missing " << f << " in " << j.dump();
  EXPECT_TRUE(j["phase"].is_string());
  EXPECT_TRUE(j["bytes_done"].is_number_unsigned());
  EXPECT_TRUE(j["bytes_total"].is_number_unsigned());
  EXPECT_TRUE(j["bytes_skipped"].is_number_unsigned());
  EXPECT_TRUE(j["throughput_bps"].is_number());
  EXPECT_TRUE(j["eta_seconds"].is_number());
  EXPECT_GE(j["throughput_bps"].get<double>(), 0.0);
  EXPECT_GE(j["eta_seconds"].get<double>(), 0.0);
}

TEST(UnitProgress, InitialSnapshot) {
  Progress p;
  ProgressSnapshot s = p.snapshot();
  EXPECT_EQ(s.phase, "planning");
  EXPECT_EQ(s.bytes_done, 0u);
  EXPECT_EQ(s.bytes_total, 0u);
  EXPECT_EQ(s.bytes_skipped, 0u);
  EXPECT_EQ(s.eta_seconds, 0.0);
  EXPECT_EQ(p.done(), 0u);
}

TEST(UnitProgress, CountersAndSnapshot) {
  Progress p;
  p.set_total(1000, 200);
  p.add_done(300);
  p.add_done(50);
  p.sub_done(25);  // a chunk that will be redone
  p.add_skipped(10);
  EXPECT_EQ(p.done(), 325u);
  ProgressSnapshot s = p.snapshot();
  EXPECT_EQ(s.bytes_done, 325u);
  EXPECT_EQ(s.bytes_total, 1000u);
  EXPECT_EQ(s.bytes_skipped, 210u);
  EXPECT_GE(s.throughput_bps, 0.0);
  EXPECT_GE(s.eta_seconds, 0.0);
  EXPECT_GE(s.elapsed_seconds, 0.0);
  // set_total replaces, it does not add.
  p.set_total(5000, 0);
  s = p.snapshot();
  EXPECT_EQ(s.bytes_total, 5000u);
  EXPECT_EQ(s.bytes_skipped, 0u);
  EXPECT_EQ(s.bytes_done, 325u);
}

// Throughput is this run's bytes over the copy's time and the ETA what is left at that
// rate, both from one snapshot's own figures. Until the 5 s window first slides (checked
// on the snapshot's own elapsed time, not assumed) the window starts with the copy, so
// throughput is exactly (done - resumed) / elapsed.
TEST(UnitProgress, ThroughputAndEtaFollowFromBytesAndElapsedTime) {
  Progress p;
  p.set_total(10000, 0);
  p.add_resumed(2000);  // a checkpoint's bytes: done, but not this run's throughput
  p.set_phase("copying");
  p.add_done(3000);
  ProgressSnapshot s = p.snapshot();
  EXPECT_EQ(s.bytes_done, 5000u);
  ASSERT_GT(s.elapsed_seconds, 0.0);
  if (s.elapsed_seconds < 5.0) EXPECT_DOUBLE_EQ(s.throughput_bps, 3000 / s.elapsed_seconds);
  ASSERT_GT(s.throughput_bps, 0.0);
  EXPECT_DOUBLE_EQ(s.eta_seconds, 5000 / s.throughput_bps);
}

TEST(UnitProgress, PhaseChanges) {
  Progress p;
  p.set_phase("copying");
  EXPECT_EQ(p.snapshot().phase, "copying");
  p.set_phase("flushing");
  EXPECT_EQ(p.snapshot().phase, "flushing");
}

TEST(UnitProgress, NoEtaWhenEverythingIsDone) {
  Progress p;
  p.set_total(4096, 0);
  p.add_done(4096);
  EXPECT_EQ(p.snapshot().eta_seconds, 0.0);
  p.add_done(10);  // more than planned (e.g. retried chunk) must not go negative
  EXPECT_EQ(p.snapshot().eta_seconds, 0.0);
}

TEST(UnitProgress, SnapshotToJsonHasAllFields) {
  ProgressSnapshot s;
  s.phase = "copying";
  s.bytes_done = 1234;
  s.bytes_total = uint64_t{5} << 40;
  s.bytes_skipped = 77;
  s.throughput_bps = 1048576.9;
  s.eta_seconds = 12.5;
  s.elapsed_seconds = 3.25;
  nlohmann::json j = nlohmann::json::parse(s.to_json());
  expect_all_fields(j);
  EXPECT_EQ(j["phase"], "copying");
  EXPECT_EQ(j["bytes_done"].get<uint64_t>(), 1234u);
  EXPECT_EQ(j["bytes_total"].get<uint64_t>(), uint64_t{5} << 40);
  EXPECT_EQ(j["bytes_skipped"].get<uint64_t>(), 77u);
  EXPECT_NEAR(j["throughput_bps"].get<double>(), 1048576.9, 1.0);
  EXPECT_DOUBLE_EQ(j["eta_seconds"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(j["elapsed_seconds"].get<double>(), 3.25);
  // One line: it goes into a JSON-lines stream.
  EXPECT_EQ(s.to_json().find('\n'), std::string::npos);
}

TEST(UnitProgress, ToJsonEscapesPhase) {
  ProgressSnapshot s;
  s.phase = "failed: \"disk0\"\nretry";
  std::string text = s.to_json();
  EXPECT_EQ(text.find('\n'), std::string::npos) << text;
  EXPECT_EQ(nlohmann::json::parse(text)["phase"], s.phase);
}

TEST(UnitProgress, StartAndFinishWriteJsonLinesToFile) {
  unit::TempDir dir;
  std::string path = dir.file("progress.jsonl");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  {
    Progress p;
    p.set_total(10000, 500);
    p.start(fd, /*terminal=*/false, 1ms);
    p.set_phase("copying");
    for (int i = 0; i < 10; ++i) {
      p.add_done(1000);
      std::this_thread::yield();
    }
    p.finish("done");
  }
  ::close(fd);
  auto lines = json_lines(unit::read_all(path));
  ASSERT_FALSE(lines.empty());
  uint64_t last_done = 0;
  for (const auto& j : lines) {
    expect_all_fields(j);
    EXPECT_EQ(j["bytes_total"].get<uint64_t>(), 10000u);
    EXPECT_EQ(j["bytes_skipped"].get<uint64_t>(), 500u);
    // Only additions here: what is reported never goes backwards.
    EXPECT_GE(j["bytes_done"].get<uint64_t>(), last_done);
    last_done = j["bytes_done"].get<uint64_t>();
  }
  const auto& final = lines.back();
  EXPECT_EQ(final["phase"], "done");
  EXPECT_EQ(final["bytes_done"].get<uint64_t>(), 10000u);
  EXPECT_EQ(final["eta_seconds"].get<double>(), 0.0);
  // "done" is written once, at the end.
  for (size_t i = 0; i + 1 < lines.size(); ++i) EXPECT_NE(lines[i]["phase"], "done") << "line " << i;
}

TEST(UnitProgress, StartAndFinishWriteJsonLinesToPipe) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  {
    Progress p;
    p.set_total(300, 0);
    // A long interval: lines come from phase changes and finish(), few enough for the pipe.
    p.start(fds[1], false, std::chrono::milliseconds(3600 * 1000));
    p.set_phase("copying");
    p.add_done(100);
    p.set_phase("flushing");
    p.add_done(200);
    p.finish("done");
  }
  ::close(fds[1]);
  std::string text = read_all_and_close(fds[0]);
  auto lines = json_lines(text);
  ASSERT_FALSE(lines.empty());
  for (const auto& j : lines) expect_all_fields(j);
  EXPECT_EQ(lines.back()["phase"], "done");
  EXPECT_EQ(lines.back()["bytes_done"].get<uint64_t>(), 300u);
  EXPECT_EQ(lines.back()["bytes_total"].get<uint64_t>(), 300u);
}

// Phases that follow each other faster than the reporter thread wakes still get a line
// each, in order (a small disk copied and verified within one wake-up).
TEST(UnitProgress, EveryPhaseEnteredGetsALineEvenWhenTheyFollowAtOnce) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  {
    Progress p;
    p.start(fds[1], false, std::chrono::milliseconds(3600 * 1000));
    p.set_phase("copying");
    p.set_phase("verifying");
    p.finish("done");
  }
  ::close(fds[1]);
  std::string text = read_all_and_close(fds[0]);
  std::vector<std::string> phases;
  for (const auto& j : json_lines(text)) {
    if (phases.empty() || phases.back() != j["phase"]) phases.push_back(j["phase"]);
  }
  EXPECT_EQ(phases, (std::vector<std::string>{"copying", "verifying", "done"})) << text;
}

TEST(UnitProgress, DestructorWithoutFinishWritesFinalLine) {
  unit::TempDir dir;
  std::string path = dir.file("progress.jsonl");
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0);
  {
    Progress p;
    p.set_total(10, 0);
    p.start(fd, false, std::chrono::milliseconds(3600 * 1000));
    p.set_phase("copying");
    p.add_done(4);
  }  // no finish(): the destructor stops the reporter and writes the last state
  ::close(fd);
  auto lines = json_lines(unit::read_all(path));
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back()["phase"], "copying");
  EXPECT_EQ(lines.back()["bytes_done"].get<uint64_t>(), 4u);
}

TEST(UnitProgress, NoSinkWritesNothingAndFinishes) {
  Progress p;
  p.start(-1, false, 1ms);
  p.add_done(5);
  p.finish("failed");
  EXPECT_EQ(p.snapshot().phase, "failed");
  EXPECT_EQ(p.snapshot().bytes_done, 5u);
}

}  // namespace
}  // namespace mk::engine
