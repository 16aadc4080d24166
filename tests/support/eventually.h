// Waiting in tests: a condition polled every 50 ms until it holds or a deadline passes.
// A guard against a hung test, never a timing assertion. Header-only; as thread-safe as
// the condition it polls.
#pragma once

#include <chrono>
#include <thread>

namespace mk::test {

// Polls `done` until it returns true (then true) or `seconds` pass (then its last answer).
template <typename F>
bool eventually(F done, int seconds = 60) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while (std::chrono::steady_clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

}  // namespace mk::test
