// Progress of one copy pass, measured against the bytes the plan must move.
//
// Workers add to the counters from any thread (atomics). A reporter thread, started by
// start(), writes one JSON object per line to a sink every interval and at each phase
// change: {"phase","bytes_done","bytes_total","bytes_skipped","throughput_bps",
// "eta_seconds","elapsed_seconds"}, and draws a bar on a terminal. finish() writes the
// final object, whose throughput is the copy phase's average (verification excluded).
// bytes_total is data plus zeroed bytes; bytes_skipped counts bytes in the pass's scope
// that needed no transfer (holes and zeros on a fresh target).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace mk::engine {

struct ProgressSnapshot {
  std::string phase;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint64_t bytes_skipped = 0;
  double throughput_bps = 0;
  double eta_seconds = 0;
  double elapsed_seconds = 0;
  std::string to_json() const;
};

class Progress {
 public:
  Progress() = default;
  ~Progress();

  // json_fd: where JSON lines go (-1 for none; not owned). terminal: draw a bar on stderr.
  void start(int json_fd, bool terminal, std::chrono::milliseconds interval);
  void finish(const std::string& final_phase);

  void set_phase(const std::string& phase);
  void set_total(uint64_t total, uint64_t skipped);
  void add_done(uint64_t bytes) { done_.fetch_add(bytes, std::memory_order_relaxed); }
  // Bytes an earlier run already did (from a checkpoint): done, but not this run's
  // throughput.
  void add_resumed(uint64_t bytes);
  void sub_done(uint64_t bytes) { done_.fetch_sub(bytes, std::memory_order_relaxed); }
  void add_skipped(uint64_t bytes) { skipped_.fetch_add(bytes, std::memory_order_relaxed); }

  ProgressSnapshot snapshot();
  uint64_t done() const { return done_.load(std::memory_order_relaxed); }

 private:
  void run();
  void emit(const ProgressSnapshot& s, bool final);

  std::atomic<uint64_t> done_{0};
  std::atomic<uint64_t> total_{0};
  std::atomic<uint64_t> skipped_{0};
  std::mutex mu_;  // guards everything below
  std::condition_variable cv_;
  std::string phase_ = "planning";
  bool stop_ = false;
  // Phases entered since the reporter last wrote: each gets its own line, even one that
  // ended before the reporter thread woke up (a fast copy followed by verification).
  std::vector<std::string> entered_;
  std::thread reporter_;
  int json_fd_ = -1;
  bool terminal_ = false;
  std::chrono::milliseconds interval_{500};
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  // Sliding window for throughput: the sample taken about 5 s ago.
  std::chrono::steady_clock::time_point window_time_ = started_;
  uint64_t window_done_ = 0;
  uint64_t baseline_done_ = 0;  // bytes already done when copying began (resume)
  // When the copy phase ended (verification does not count towards throughput).
  std::optional<std::chrono::steady_clock::time_point> copy_ended_;
};

}  // namespace mk::engine
