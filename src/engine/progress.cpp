#include "engine/progress.h"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <nlohmann/json.hpp>

#include "common/units.h"

namespace mk::engine {

std::string ProgressSnapshot::to_json() const {
  nlohmann::json j{{"phase", phase},
                   {"bytes_done", bytes_done},
                   {"bytes_total", bytes_total},
                   {"bytes_skipped", bytes_skipped},
                   {"throughput_bps", static_cast<uint64_t>(throughput_bps)},
                   {"eta_seconds", eta_seconds},
                   {"elapsed_seconds", elapsed_seconds}};
  return j.dump();
}

Progress::~Progress() {
  if (reporter_.joinable()) finish(phase_);
}

void Progress::start(int json_fd, bool terminal, std::chrono::milliseconds interval) {
  std::lock_guard lock(mu_);
  json_fd_ = json_fd;
  terminal_ = terminal;
  interval_ = interval;
  started_ = window_time_ = std::chrono::steady_clock::now();
  baseline_done_ = window_done_ = done();
  reporter_ = std::thread([this] { run(); });
}

void Progress::set_phase(const std::string& phase) {
  std::lock_guard lock(mu_);
  if (phase_ == "copying" && phase != "copying") copy_ended_ = std::chrono::steady_clock::now();
  phase_ = phase;
  entered_.push_back(phase);
  if (phase == "copying") {
    copy_ended_.reset();
    // Throughput counts this run's bytes, not those a checkpoint already had.
    started_ = window_time_ = std::chrono::steady_clock::now();
    baseline_done_ = window_done_ = done();
  }
  cv_.notify_all();
}

void Progress::add_resumed(uint64_t bytes) {
  std::lock_guard lock(mu_);
  done_.fetch_add(bytes, std::memory_order_relaxed);
  baseline_done_ += bytes;
  window_done_ += bytes;
}

void Progress::set_total(uint64_t total, uint64_t skipped) {
  total_ = total;
  skipped_ = skipped;
}

ProgressSnapshot Progress::snapshot() {
  using namespace std::chrono;
  auto now = steady_clock::now();
  ProgressSnapshot s;
  std::lock_guard lock(mu_);
  s.phase = phase_;
  s.bytes_done = done();
  s.bytes_total = total_;
  s.bytes_skipped = skipped_;
  s.elapsed_seconds = duration<double>(now - started_).count();
  double window = duration<double>(now - window_time_).count();
  if (window > 0.2 && s.bytes_done >= window_done_) {
    s.throughput_bps = (s.bytes_done - window_done_) / window;
  } else if (s.elapsed_seconds > 0) {
    s.throughput_bps = (s.bytes_done - baseline_done_) / s.elapsed_seconds;
  }
  if (window >= 5.0) {  // slide the window
    window_time_ = now;
    window_done_ = s.bytes_done;
  }
  uint64_t left = s.bytes_total > s.bytes_done ? s.bytes_total - s.bytes_done : 0;
  s.eta_seconds = s.throughput_bps > 0 ? left / s.throughput_bps : 0;
  return s;
}

void Progress::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait_for(lock, interval_, [this] { return stop_ || !entered_.empty(); });
    std::vector<std::string> entered = std::exchange(entered_, {});
    if (stop_ && entered.empty()) break;  // finish() writes the last line
    lock.unlock();
    for (size_t i = 0; i + 1 < entered.size(); ++i) {  // phases already left: a line each
      ProgressSnapshot s = snapshot();
      s.phase = entered[i];
      emit(s, false);
    }
    emit(snapshot(), false);
    lock.lock();
  }
}

void Progress::finish(const std::string& final_phase) {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    cv_.notify_all();
  }
  if (reporter_.joinable()) reporter_.join();
  set_phase(final_phase);
  ProgressSnapshot s = snapshot();
  // The final figure is the copy phase's average, not the last window's.
  double copy_seconds = s.elapsed_seconds;
  {
    std::lock_guard lock(mu_);
    if (copy_ended_) copy_seconds = std::chrono::duration<double>(*copy_ended_ - started_).count();
  }
  s.throughput_bps = copy_seconds > 0 ? (s.bytes_done - baseline_done_) / copy_seconds : 0;
  s.eta_seconds = 0;
  emit(s, true);
}

void Progress::emit(const ProgressSnapshot& s, bool final) {
  if (json_fd_ >= 0) {
    std::string line = s.to_json() + "\n";
    ssize_t ignored = ::write(json_fd_, line.data(), line.size());
    (void)ignored;
  }
  if (terminal_) {
    double pct = s.bytes_total ? 100.0 * s.bytes_done / s.bytes_total : 100.0;
    int filled = static_cast<int>(std::clamp(pct, 0.0, 100.0) / 100.0 * 30);
    std::string bar(filled, '#');
    bar.resize(30, '.');
    std::string line = fmt::format("\r[{}] {:5.1f}% {} / {}  {}/s  eta {:.0f}s  {:<10}", bar, pct,
                                   format_bytes(s.bytes_done), format_bytes(s.bytes_total),
                                   format_bytes(static_cast<uint64_t>(s.throughput_bps)),
                                   s.eta_seconds, s.phase);
    if (final) line += "\n";
    ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
    (void)ignored;
  }
}

}  // namespace mk::engine
