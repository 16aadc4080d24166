#include "common/subprocess.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
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

// The child side between fork and exec: only async-signal-safe calls.
[[noreturn]] void exec_child(char* const* argv, char* const* envp, int out, int err, int in,
                             bool die_with_parent, const char* dir, pid_t parent) {
  if (die_with_parent) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent) _exit(127);
  }
  // A fresh signal state: the parent may block or ignore signals.
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(127);
  if (dir && *dir && chdir(dir) != 0) _exit(127);
  execvpe(argv[0], argv, envp);
  _exit(127);
}

}  // namespace

Subprocess Subprocess::spawn(const std::vector<std::string>& args, const SpawnOptions& o) {
  if (args.empty()) throw Error("spawn: empty command");
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  std::vector<std::string> env_store;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos && o.env.count(kv.substr(0, eq))) continue;
    env_store.push_back(std::move(kv));
  }
  for (const auto& [k, v] : o.env) env_store.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& kv : env_store) envp.push_back(kv.data());
  envp.push_back(nullptr);

  int out = open_out(o.stdout_path, o.append);
  int err = o.stderr_path == o.stdout_path && !o.stdout_path.empty() ? fcntl(out, F_DUPFD_CLOEXEC, 0)
                                                                   : open_out(o.stderr_path, o.append);
  int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out < 0 || err < 0 || in < 0) {
    int e = errno;
    for (int fd : {out, err, in}) if (fd >= 0) ::close(fd);
    throw Error(fmt::format("{}: cannot open its log file: {}", args[0], std::strerror(e)));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child(argv.data(), envp.data(), out, err, in, o.die_with_parent,
                           o.working_dir.c_str(), parent);
  int fork_errno = errno;
  ::close(out);
  ::close(err);
  ::close(in);
  if (pid < 0) throw Error(fmt::format("{}: fork failed: {}", args[0], std::strerror(fork_errno)));
  Subprocess p;
  p.pid_ = pid;
  return p;
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
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) throw Error(fmt::format("{}: pipe: {}", args.at(0), std::strerror(errno)));
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  int err = open_out(stderr_path, true);
  int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) exec_child(argv.data(), environ, fds[1], err, in, true, nullptr, parent);
  ::close(fds[1]);
  ::close(err);
  ::close(in);
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
