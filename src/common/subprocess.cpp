#include "common/subprocess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "common/error.h"

extern char** environ;

namespace mk {
namespace {

int open_out(const std::string& path, bool append) {
  if (path.empty()) return ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC);
  return ::open(path.c_str(), flags, 0600);
}

// What the child needs between fork and exec, prepared in the parent: after fork only
// async-signal-safe calls are allowed, so nothing here may allocate in the child.
struct ChildSetup {
  std::vector<std::string> env_store;
  std::vector<char*> argv, envp;
  int out = -1, err = -1, in = -1;
  bool die_with_parent = true;
  bool own_session = false;
  bool close_inherited_fds = false;
  const char* dir = nullptr;
  pid_t parent = -1;

  ChildSetup() = default;
  ChildSetup(const ChildSetup&) = delete;
  ChildSetup& operator=(const ChildSetup&) = delete;
  ~ChildSetup() {
    for (int fd : {out, err, in}) {
      if (fd >= 0) ::close(fd);
    }
  }
};

// Fills `s` from `args` and `o`. Throws mk::Error if a log file cannot be opened.
void prepare(ChildSetup& s, const std::vector<std::string>& args, const SpawnOptions& o) {
  if (args.empty()) throw Error("spawn: empty command");
  for (const auto& a : args) s.argv.push_back(const_cast<char*>(a.c_str()));
  s.argv.push_back(nullptr);
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos && o.env.count(kv.substr(0, eq))) continue;
    s.env_store.push_back(std::move(kv));
  }
  for (const auto& [k, v] : o.env) s.env_store.push_back(k + "=" + v);
  for (auto& kv : s.env_store) s.envp.push_back(kv.data());
  s.envp.push_back(nullptr);
  auto check = [&](int fd) {
    if (fd < 0) throw Error(fmt::format("{}: cannot open its log file: {}", args[0], std::strerror(errno)));
    return fd;
  };
  s.out = check(open_out(o.stdout_path, o.append));
  s.err = check(o.stderr_path == o.stdout_path && !o.stdout_path.empty() ? fcntl(s.out, F_DUPFD_CLOEXEC, 0)
                                                                         : open_out(o.stderr_path, o.append));
  s.in = check(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  s.die_with_parent = o.die_with_parent;
  s.own_session = o.own_session;
  s.dir = o.working_dir.c_str();
  s.parent = getpid();
}

// The child side between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(const ChildSetup& s) {
  if (s.die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != s.parent) _exit(127);
  }
  if (s.own_session && setsid() < 0) _exit(127);
  // A fresh signal state: the parent may block or ignore signals.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (dup2(s.in, 0) < 0 || dup2(s.out, 1) < 0 || dup2(s.err, 2) < 0) _exit(127);
  if (s.close_inherited_fds) {
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, 3U, ~0U, 0U) != 0)
#endif
      for (int fd = 3; fd < 65536; ++fd) ::close(fd);
  }
  if (s.dir && *s.dir && chdir(s.dir) != 0) _exit(127);
  execvpe(s.argv[0], s.argv.data(), s.envp.data());
  _exit(127);
}

// The grandchild of spawn_detached(), before exec: waits until the middle process has
// exited and it was handed to init (or a subreaper). A program that sets a parent-death
// signal on itself at start (nbdkit 1.32 calls prctl(PR_SET_PDEATHSIG, SIGTERM)
// unconditionally) while the middle still lives would be killed when the middle exits:
// a kept nbdkit gone within milliseconds of its start with nothing in its log, seen under
// load. Bounded (5 s), and async-signal-safe (getppid, nanosleep).
void wait_until_orphaned(pid_t middle) {
  timespec pause{0, 1'000'000};  // 1 ms
  for (int i = 0; i < 5000 && getppid() == middle; ++i) nanosleep(&pause, nullptr);
}

}  // namespace

Subprocess Subprocess::spawn(const std::vector<std::string>& args, const SpawnOptions& o) {
  ChildSetup setup;
  prepare(setup, args, o);
  pid_t pid = fork();
  if (pid == 0) exec_child(setup);
  if (pid < 0) throw Error(fmt::format("{}: fork failed: {}", args[0], std::strerror(errno)));
  Subprocess p;
  p.pid_ = pid;
  return p;
}

pid_t Subprocess::spawn_detached(const std::vector<std::string>& args, const SpawnOptions& o) {
  ChildSetup setup;
  prepare(setup, args, o);
  setup.die_with_parent = false;
  setup.own_session = false;  // the middle process below starts the session
  // No inherited descriptor (a listening socket of this process) may outlive it in the child.
  setup.close_inherited_fds = true;
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) throw Error(fmt::format("{}: pipe: {}", args[0], std::strerror(errno)));
  pid_t middle = fork();
  if (middle == 0) {
    // A new session, then a grandchild: it is not a session leader (it can never get a
    // controlling terminal) and not our child (init reaps it).
    ::setsid();
    pid_t middle_pid = getpid();
    pid_t server = fork();
    if (server == 0) {
      wait_until_orphaned(middle_pid);
      exec_child(setup);
    }
    (void)!::write(pipe_fds[1], &server, sizeof server);
    _exit(server > 0 ? 0 : 1);
  }
  int fork_errno = errno;
  ::close(pipe_fds[1]);
  pid_t server = -1;
  if (middle > 0) {
    if (::read(pipe_fds[0], &server, sizeof server) != sizeof server) server = -1;
    while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  ::close(pipe_fds[0]);
  if (middle < 0) throw Error(fmt::format("{}: fork failed: {}", args[0], std::strerror(fork_errno)));
  if (server <= 0) throw Error(fmt::format("{}: could not be started in its own session", args[0]));
  return server;
}

Subprocess::Subprocess(Subprocess&& other) noexcept : pid_(other.pid_), status_(other.status_) {
  other.pid_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = other.pid_;
    status_ = other.status_;
    other.pid_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() { stop(); }

// waitpid failed (ECHILD: someone else reaped the child, e.g. with SIGCHLD ignored):
// the status is unknown, which must never read as success.
void Subprocess::lost() {
  status_ = -1;
  pid_ = -1;
}

void Subprocess::record(int wstatus) {
  if (WIFEXITED(wstatus)) status_ = WEXITSTATUS(wstatus);
  else if (WIFSIGNALED(wstatus)) status_ = 128 + WTERMSIG(wstatus);
  pid_ = -1;
}

bool Subprocess::running() {
  if (pid_ <= 0) return false;
  int ws = 0;
  pid_t r = waitpid(pid_, &ws, WNOHANG);
  if (r == pid_) {
    record(ws);
    return false;
  }
  if (r < 0 && errno != EINTR) {
    lost();
    return false;
  }
  return true;
}

std::optional<int> Subprocess::wait_for(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (running()) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return status_;
}

int Subprocess::wait() {
  if (pid_ > 0) {
    int ws = 0;
    pid_t r;
    while ((r = waitpid(pid_, &ws, 0)) < 0 && errno == EINTR) {
    }
    if (r == pid_) record(ws);
    else lost();
  }
  return status_.value_or(-1);
}

void Subprocess::signal(int sig) {
  if (pid_ > 0) ::kill(pid_, sig);
}

void Subprocess::stop(std::chrono::milliseconds grace) {
  if (!running()) return;
  ::kill(pid_, SIGTERM);
  if (!wait_for(grace)) {
    ::kill(pid_, SIGKILL);
    wait();
  }
}

int run_capture(const std::vector<std::string>& args, std::string& out, const std::string& stderr_path) {
  SpawnOptions options;
  options.stderr_path = stderr_path;
  ChildSetup setup;
  prepare(setup, args, options);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw Error(fmt::format("{}: pipe: {}", args[0], std::strerror(errno)));
  ::close(setup.out);
  setup.out = fds[1];
  pid_t pid = fork();
  if (pid == 0) exec_child(setup);
  ::close(fds[1]);
  setup.out = -1;
  if (pid < 0) {
    ::close(fds[0]);
    throw Error(fmt::format("{}: fork failed", args[0]));
  }
  out.clear();
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) out.append(buf, n);
  }
  ::close(fds[0]);
  int ws = 0;
  pid_t r;
  while ((r = waitpid(pid, &ws, 0)) < 0 && errno == EINTR) {
  }
  if (r != pid) return -1;  // status unknown (see Subprocess::lost)
  if (WIFEXITED(ws)) return WEXITSTATUS(ws);
  return 128 + WTERMSIG(ws);
}

}  // namespace mk
