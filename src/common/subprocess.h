// Starting and stopping helper programs (nbdkit, qemu-nbd, ssh, ...).
//
// Programs are started from an argument vector, never through a shell, so no argument
// is ever interpreted. Secrets must not be passed as arguments (they show in ps):
// pass a file path instead. A Subprocess owns its child: the destructor stops it
// (SIGTERM, then SIGKILL after a grace period) and reaps it, by PID only. A server that
// must outlive this process is started with Subprocess::spawn_detached(), which owns
// nothing and hands back the PID. Every child gets the same set-up between fork and
// exec: standard descriptors from the options, a fresh signal mask and default
// dispositions, the working directory, the environment.
// Not thread-safe; one owner at a time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace mk {

struct SpawnOptions {
  std::map<std::string, std::string> env;  // added to (or replacing in) the environment
  std::string stdout_path;                 // "" = /dev/null
  std::string stderr_path;                 // "" = /dev/null; same as stdout_path is fine
  bool append = true;                      // append to those files instead of truncating
  bool die_with_parent = true;             // PR_SET_PDEATHSIG(SIGTERM) in the child
  // setsid() in the child: a session (and process group) of its own. Linux's autogroup
  // scheduler (on by default outside a CPU cgroup) shares the CPU between sessions, so a
  // busy helper in the caller's session would take its CPU from the caller's share.
  // The parent-death signal still applies.
  bool own_session = false;
  std::string working_dir;                 // "" = inherit
};

class Subprocess {
 public:
  // Starts argv[0] (looked up in PATH). Throws mk::Error if it cannot be started.
  static Subprocess spawn(const std::vector<std::string>& argv, const SpawnOptions& options = {});

  // Starts argv[0] in a new session as a grandchild of this process (double fork), so it
  // is never this process's child: it gets no parent-death signal (die_with_parent is
  // ignored; argv[0] is executed only once the middle process has exited, so a program
  // that sets one on itself cannot be hit by the middle's exit), keeps running when this process exits, and inherits no descriptor above 2
  // (a listening socket of this process must not outlive it in the server). Returns its
  // PID; the caller owns nothing: watch it with a pidfd or kill(pid, 0), end it by PID.
  // A program that cannot be executed exits 127 at once. Throws mk::Error if it cannot
  // be started.
  static pid_t spawn_detached(const std::vector<std::string>& argv, const SpawnOptions& options = {});

  Subprocess() = default;
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();  // false once it exited (reaps it)
  // The exit status as a shell reports it (128+signal when killed), once exited; -1 when
  // it cannot be known (the child was reaped elsewhere).
  std::optional<int> exit_status() const { return status_; }

  // Waits up to `timeout` for the child to exit; returns its status if it did.
  std::optional<int> wait_for(std::chrono::milliseconds timeout);
  int wait();

  // SIGTERM, then SIGKILL after `grace`; reaps. Safe to call twice.
  void stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  void signal(int sig);

 private:
  void record(int wstatus);
  void lost();
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Runs a program to completion, capturing standard output (standard error goes to
// `stderr_path` or /dev/null). Returns the exit status (-1 if unknown); output in `out`.
int run_capture(const std::vector<std::string>& argv, std::string& out,
                const std::string& stderr_path = "");

}  // namespace mk
