// Runs a piece of a test in a forked child process and brings back what it returned:
// for what must not happen in the test process itself (dropping root, exiting right
// after starting something). The body runs in the child only; it must not use gtest
// assertions (their failures would be lost). Call from a single-threaded test.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <stdexcept>
#include <string>

namespace mk::unit {

// The text `body` returned in the child, once the child exited. Throws
// std::runtime_error if the child could not run or did not exit normally.
inline std::string in_child(const std::function<std::string()>& body) {
  int fds[2];
  if (::pipe(fds) != 0) throw std::runtime_error("in_child: pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("in_child: fork failed");
  if (pid == 0) {
    ::close(fds[0]);
    std::string out;
    try {
      out = body();
    } catch (const std::exception& e) {
      out = std::string("exception: ") + e.what();
    }
    for (size_t off = 0; off < out.size();) {
      ssize_t n = ::write(fds[1], out.data() + off, out.size() - off);
      if (n <= 0) _exit(2);
      off += static_cast<size_t>(n);
    }
    _exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("in_child: the child failed (status " + std::to_string(status) + ")");
  }
  return out;
}

}  // namespace mk::unit
