// Unit tests for src/common/subprocess.h: starting, waiting for and stopping children.
// The children are ordinary POSIX tools (true, false, sh, sleep, echo).
#include "common/subprocess.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <sstream>
#include <string>
#include <thread>

#include "common/error.h"
#include "in_child.h"
#include "unit_temp_dir.h"

namespace mk {
namespace {

using namespace std::chrono_literals;

// Waits (up to a generous deadline, never asserted on) until `path` contains `text`.
bool wait_for_file_text(const std::string& path, const std::string& text) {
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (unit::read_all(path).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

std::string run_sh(const std::string& script, const SpawnOptions& options, const std::string& out_path) {
  SpawnOptions o = options;
  o.stdout_path = out_path;
  auto p = Subprocess::spawn({"sh", "-c", script}, o);
  EXPECT_EQ(p.wait(), 0) << script;
  return unit::read_all(out_path);
}

TEST(UnitSubprocess, TrueExitsZero) {
  auto p = Subprocess::spawn({"true"});
  EXPECT_GT(p.pid(), 0);
  EXPECT_EQ(p.wait(), 0);
  EXPECT_EQ(p.exit_status(), 0);
  EXPECT_FALSE(p.running());
}

TEST(UnitSubprocess, FalseExitsOne) {
  auto p = Subprocess::spawn({"false"});
  EXPECT_EQ(p.wait(), 1);
  EXPECT_EQ(p.exit_status(), 1);
}

TEST(UnitSubprocess, ExitStatusIsPassedThrough) {
  auto p = Subprocess::spawn({"sh", "-c", "exit 42"});
  EXPECT_EQ(p.wait(), 42);
  EXPECT_EQ(p.wait(), 42);  // waiting again returns the recorded status
}

TEST(UnitSubprocess, NoStatusWhileRunning) {
  auto p = Subprocess::spawn({"sleep", "30"});
  EXPECT_TRUE(p.running());
  EXPECT_FALSE(p.exit_status().has_value());
  p.stop();
}

TEST(UnitSubprocess, StopSleepByPidGivesSigtermStatus) {
  auto p = Subprocess::spawn({"sleep", "30"});
  pid_t pid = p.pid();
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(p.running());
  p.stop();
  EXPECT_FALSE(p.running());
  EXPECT_EQ(p.exit_status(), 128 + SIGTERM);
  // Reaped: the PID is no longer a child of ours.
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
  p.stop();  // twice is safe
  EXPECT_EQ(p.exit_status(), 128 + SIGTERM);
}

TEST(UnitSubprocess, StopEscalatesToSigkillWhenTermIsIgnored) {
  unit::TempDir dir;
  std::string out = dir.file("out");
  SpawnOptions o;
  o.stdout_path = out;
  // Ignored signals stay ignored across exec, so sleep ignores SIGTERM too.
  auto p = Subprocess::spawn({"sh", "-c", "trap '' TERM; echo ready; exec sleep 30"}, o);
  ASSERT_TRUE(wait_for_file_text(out, "ready"));
  p.stop(100ms);
  EXPECT_EQ(p.exit_status(), 128 + SIGKILL);
  EXPECT_FALSE(p.running());
}

TEST(UnitSubprocess, SignalIsDeliveredToTheChild) {
  auto p = Subprocess::spawn({"sleep", "30"});
  p.signal(SIGKILL);
  EXPECT_EQ(p.wait(), 128 + SIGKILL);
}

TEST(UnitSubprocess, WaitForTimesOutWhileRunning) {
  auto p = Subprocess::spawn({"sleep", "30"});
  EXPECT_FALSE(p.wait_for(50ms).has_value());
  EXPECT_TRUE(p.running());
  p.stop();
  EXPECT_EQ(p.exit_status(), 128 + SIGTERM);
}

TEST(UnitSubprocess, WaitForReturnsStatusOnExit) {
  auto p = Subprocess::spawn({"sh", "-c", "exit 3"});
  auto status = p.wait_for(30s);
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(*status, 3);
}

TEST(UnitSubprocess, NonexistentProgramExits127) {
  auto p = Subprocess::spawn({"mk-unit-no-such-program-4711"});
  EXPECT_EQ(p.wait(), 127);
}

TEST(UnitSubprocess, EmptyCommandThrows) { EXPECT_THROW(Subprocess::spawn({}), Error); }

TEST(UnitSubprocess, UnwritableLogPathThrows) {
  unit::TempDir dir;
  SpawnOptions o;
  o.stdout_path = dir.file("no-such-dir/out.log");
  EXPECT_THROW(Subprocess::spawn({"true"}, o), Error);
}

TEST(UnitSubprocess, DefaultConstructedHasNoChild) {
  Subprocess p;
  EXPECT_EQ(p.pid(), -1);
  EXPECT_FALSE(p.running());
  EXPECT_FALSE(p.exit_status().has_value());
  p.stop();
  EXPECT_EQ(p.wait(), -1);
}

TEST(UnitSubprocess, MoveTransfersOwnership) {
  auto a = Subprocess::spawn({"sleep", "30"});
  pid_t pid = a.pid();
  Subprocess b(std::move(a));
  EXPECT_EQ(a.pid(), -1);
  EXPECT_FALSE(a.running());
  EXPECT_EQ(b.pid(), pid);
  EXPECT_TRUE(b.running());
  Subprocess c;
  c = std::move(b);
  EXPECT_EQ(c.pid(), pid);
  EXPECT_TRUE(c.running());
  c.stop();
  EXPECT_EQ(c.exit_status(), 128 + SIGTERM);
}

TEST(UnitSubprocess, MoveAssignStopsThePreviousChild) {
  auto a = Subprocess::spawn({"sleep", "30"});
  pid_t old_pid = a.pid();
  a = Subprocess::spawn({"true"});
  EXPECT_NE(a.pid(), old_pid);
  EXPECT_EQ(::kill(old_pid, 0), -1) << "the replaced child still runs";
  EXPECT_EQ(a.wait(), 0);
}

TEST(UnitSubprocess, DestructorStopsAndReapsTheChild) {
  pid_t pid;
  {
    auto p = Subprocess::spawn({"sleep", "30"});
    pid = p.pid();
    ASSERT_TRUE(p.running());
  }
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_EQ(errno, ESRCH);
}

TEST(UnitSubprocess, RunCaptureEchoHello) {
  std::string out = "stale";
  EXPECT_EQ(run_capture({"echo", "hello"}, out), 0);
  EXPECT_EQ(out, "hello\n");
}

TEST(UnitSubprocess, RunCaptureStatusAndStderr) {
  unit::TempDir dir;
  std::string err = dir.file("err");
  std::string out;
  EXPECT_EQ(run_capture({"sh", "-c", "echo out; echo err >&2; exit 5"}, out, err), 5);
  EXPECT_EQ(out, "out\n");
  EXPECT_EQ(unit::read_all(err), "err\n");
}

TEST(UnitSubprocess, RunCaptureLargeOutput) {
  std::string out;
  // 1 MiB: more than a pipe holds, so the reader must drain while the child writes.
  EXPECT_EQ(run_capture({"head", "-c", "1048576", "/dev/zero"}, out), 0);
  EXPECT_EQ(out.size(), 1048576u);
}

TEST(UnitSubprocess, RunCaptureNonexistentProgram) {
  std::string out;
  EXPECT_EQ(run_capture({"mk-unit-no-such-program-4711"}, out), 127);
  EXPECT_TRUE(out.empty());
}

TEST(UnitSubprocess, RunCaptureKilledBySignal) {
  std::string out;
  EXPECT_EQ(run_capture({"sh", "-c", "kill -TERM $$"}, out), 128 + SIGTERM);
}

TEST(UnitSubprocess, ArgumentsAreNotInterpretedByAShell) {
  std::string out;
  EXPECT_EQ(run_capture({"echo", "$HOME; echo injected", "*"}, out), 0);
  EXPECT_EQ(out, "$HOME; echo injected *\n");
}

TEST(UnitSubprocess, EnvironmentAdditionsVisibleToChild) {
  unit::TempDir dir;
  SpawnOptions o;
  o.env["MK_UNIT_X"] = "hello world";
  EXPECT_EQ(run_sh("printf '%s\\n' \"$MK_UNIT_X\"", o, dir.file("out")), "hello world\n");
}

TEST(UnitSubprocess, EnvironmentReplacesAndInherits) {
  unit::TempDir dir;
  ASSERT_EQ(::setenv("MK_UNIT_REPLACED", "old", 1), 0);
  ASSERT_EQ(::setenv("MK_UNIT_INHERITED", "kept", 1), 0);
  SpawnOptions o;
  o.env["MK_UNIT_REPLACED"] = "new";
  std::string out = run_sh("env | grep '^MK_UNIT_' | sort", o, dir.file("out"));
  EXPECT_EQ(out, "MK_UNIT_INHERITED=kept\nMK_UNIT_REPLACED=new\n");
  ::unsetenv("MK_UNIT_REPLACED");
  ::unsetenv("MK_UNIT_INHERITED");
}

TEST(UnitSubprocess, WorkingDirectory) {
  unit::TempDir dir;
  SpawnOptions o;
  o.working_dir = dir.path().string();
  std::string out = run_sh("pwd -P", o, dir.file("out"));
  EXPECT_EQ(out, std::filesystem::canonical(dir.path()).string() + "\n");
}

TEST(UnitSubprocess, BadWorkingDirectoryExits127) {
  unit::TempDir dir;
  SpawnOptions o;
  o.working_dir = dir.file("missing");
  auto p = Subprocess::spawn({"true"}, o);
  EXPECT_EQ(p.wait(), 127);
}

TEST(UnitSubprocess, OutputAppendsOrTruncates) {
  unit::TempDir dir;
  std::string log = dir.file("log");
  SpawnOptions o;
  o.stdout_path = log;
  o.append = true;
  EXPECT_EQ(Subprocess::spawn({"echo", "one"}, o).wait(), 0);
  EXPECT_EQ(Subprocess::spawn({"echo", "two"}, o).wait(), 0);
  EXPECT_EQ(unit::read_all(log), "one\ntwo\n");
  o.append = false;
  EXPECT_EQ(Subprocess::spawn({"echo", "three"}, o).wait(), 0);
  EXPECT_EQ(unit::read_all(log), "three\n");
}

TEST(UnitSubprocess, StdoutAndStderrToTheSameFile) {
  unit::TempDir dir;
  std::string log = dir.file("log");
  SpawnOptions o;
  o.stdout_path = log;
  o.stderr_path = log;
  EXPECT_EQ(Subprocess::spawn({"sh", "-c", "echo out; echo err >&2; echo out2"}, o).wait(), 0);
  EXPECT_EQ(unit::read_all(log), "out\nerr\nout2\n");
}

TEST(UnitSubprocess, StderrToItsOwnFile) {
  unit::TempDir dir;
  SpawnOptions o;
  o.stdout_path = dir.file("out");
  o.stderr_path = dir.file("err");
  EXPECT_EQ(Subprocess::spawn({"sh", "-c", "echo out; echo err >&2"}, o).wait(), 0);
  EXPECT_EQ(unit::read_all(dir.file("out")), "out\n");
  EXPECT_EQ(unit::read_all(dir.file("err")), "err\n");
}

// The session the child's shell runs in (field 6 of its /proc stat), as it reports it.
std::string child_session(bool own_session, pid_t& pid) {
  unit::TempDir dir;
  SpawnOptions o;
  o.stdout_path = dir.file("out");
  o.own_session = own_session;
  Subprocess p = Subprocess::spawn({"sh", "-c", "cut -d ' ' -f 6 /proc/$$/stat"}, o);
  pid = p.pid();
  EXPECT_EQ(p.wait(), 0);
  return unit::read_all(dir.file("out"));
}

TEST(UnitSubprocess, OwnSessionPutsTheChildInASessionItLeads) {
  pid_t pid = -1;
  std::string sid = child_session(true, pid);
  EXPECT_EQ(sid, std::to_string(pid) + "\n");
}

TEST(UnitSubprocess, ByDefaultTheChildStaysInOurSession) {
  pid_t pid = -1;
  std::string sid = child_session(false, pid);
  EXPECT_EQ(sid, std::to_string(getsid(0)) + "\n");
  EXPECT_NE(sid, std::to_string(pid) + "\n");
}

TEST(UnitSubprocess, StdinIsDevNull) {
  std::string out;
  EXPECT_EQ(run_capture({"sh", "-c", "cat; echo end"}, out), 0);
  EXPECT_EQ(out, "end\n");
}

// Counts the child's file descriptors (those of the shell itself) that point at `log`.
int fds_pointing_at(const std::string& log, const SpawnOptions& base) {
  SpawnOptions o = base;
  // Descriptors the shell opens for the glob itself may be gone by the time readlink runs.
  std::string script = "for f in /proc/$$/fd/*; do readlink \"$f\" || true; done";
  auto p = Subprocess::spawn({"sh", "-c", script}, o);
  EXPECT_EQ(p.wait(), 0);
  std::string text = unit::read_all(log);
  int n = 0;
  for (size_t pos = 0; (pos = text.find(log + "\n", pos)) != std::string::npos; pos += log.size()) ++n;
  return n;
}

TEST(UnitSubprocess, SeparateLogFilesAreNotLeakedToTheChild) {
  unit::TempDir dir;
  std::string log = dir.file("log");
  SpawnOptions o;
  o.stdout_path = log;
  EXPECT_EQ(fds_pointing_at(log, o), 1);  // standard output only
}

// A log file shared by stdout and stderr is not leaked to the child as a third descriptor.
TEST(UnitSubprocess, SharedLogFileIsNotLeakedToTheChild) {
  unit::TempDir dir;
  std::string log = dir.file("log");
  SpawnOptions o;
  o.stdout_path = log;
  o.stderr_path = log;
  EXPECT_EQ(fds_pointing_at(log, o), 2);  // standard output and standard error only
}

// With SIGCHLD ignored the child is reaped by the kernel: the status is unknown, never 0.
TEST(UnitSubprocess, FailureIsNotReportedAsSuccessWhenSigchldIsIgnored) {
  struct sigaction ignore {}, old {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGCHLD, &ignore, &old), 0);
  auto p = Subprocess::spawn({"false"});
  int status = p.wait();
  std::string out;
  int captured = run_capture({"false"}, out);
  ::sigaction(SIGCHLD, &old, nullptr);
  EXPECT_NE(status, 0) << "Subprocess::wait() reported success for `false`";
  EXPECT_NE(captured, 0) << "run_capture() reported success for `false`";
}

// ---------------------------------------------------------------------------------
// spawn_detached: a server that outlives the process that started it.

// A pidfd for `pid`, or -1 when the process is already gone (reaped).
int pidfd_of(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// True when the process behind `pidfd` exits within `timeout` (a zombie counts as exited).
bool exits_within(int pidfd, std::chrono::milliseconds timeout) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// Ends a detached process by its PID and waits until it is gone.
void end_detached(pid_t pid) {
  int fd = pidfd_of(pid);
  ::kill(pid, SIGKILL);
  if (fd >= 0) {
    EXPECT_TRUE(exits_within(fd, 20s)) << "pid " << pid << " survived SIGKILL";
    ::close(fd);
  }
}

pid_t parent_of(pid_t pid) {
  std::string status = unit::read_all("/proc/" + std::to_string(pid) + "/status");
  auto at = status.find("PPid:");
  return at == std::string::npos ? -1 : std::stoi(status.substr(at + 5));
}

TEST(UnitSubprocess, DetachedChildIsNotOursAndRunsInItsOwnSession) {
  unit::TempDir dir;
  std::string log = dir.file("log");
  SpawnOptions o;
  o.stdout_path = log;
  o.stderr_path = log;
  o.env["MK_UNIT_DETACHED"] = "yes";
  pid_t pid = Subprocess::spawn_detached({"sh", "-c", "echo out $MK_UNIT_DETACHED; echo err >&2; exec sleep 30"}, o);
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(wait_for_file_text(log, "err\n")) << unit::read_all(log);
  EXPECT_NE(unit::read_all(log).find("out yes\n"), std::string::npos) << unit::read_all(log);
  // Not our child: waitpid cannot reap it, and its parent is not this process.
  EXPECT_EQ(::waitpid(pid, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_NE(parent_of(pid), ::getpid());
  // Its own session, of which it is not the leader (it can never get a terminal).
  EXPECT_NE(::getsid(pid), ::getsid(0));
  EXPECT_NE(::getsid(pid), pid);
  end_detached(pid);
}

// The process that starts it exits at once; the detached server gets no parent-death
// signal and keeps running.
TEST(UnitSubprocess, DetachedChildOutlivesTheProcessThatStartedIt) {
  pid_t pid = std::stoi(unit::in_child([] { return std::to_string(Subprocess::spawn_detached({"sleep", "30"})); }));
  ASSERT_GT(pid, 0);
  int fd = pidfd_of(pid);
  ASSERT_GE(fd, 0) << "the detached server is gone already";
  EXPECT_FALSE(exits_within(fd, 300ms)) << "the detached server died with the process that started it";
  EXPECT_EQ(unit::read_all("/proc/" + std::to_string(pid) + "/cmdline"), std::string("sleep\0" "30\0", 9));
  ::close(fd);
  end_detached(pid);
}

// A program that sets a parent-death signal on itself as it starts (nbdkit 1.32 does)
// must never start while the middle process of the double fork still lives: the
// middle's exit would then signal it (a kept nbdkit dying at its start under load).
// The middle is made slow on purpose: a fork handler sleeps in it after its fork.
std::atomic<bool> g_slow_middle{false};
pid_t g_test_pid = ::getpid();

void sleep_if_middle() {
  // The middle: a session leader (it called setsid) forked from this process.
  if (g_slow_middle && ::getpid() != g_test_pid && ::getsid(0) == ::getpid()) {
    timespec t{0, 300'000'000};
    nanosleep(&t, nullptr);
  }
}

TEST(UnitSubprocess, DetachedProgramStartsOnlyOnceTheMiddleProcessIsGone) {
  static const int registered = pthread_atfork(nullptr, sleep_if_middle, nullptr);
  ASSERT_EQ(registered, 0);
  unit::TempDir dir;
  SpawnOptions o;
  o.stdout_path = dir.file("parent");
  g_slow_middle = true;
  // $PPID: the shell's parent when it started; field 6 of its stat: its session, whose
  // leader is the middle.
  pid_t pid = Subprocess::spawn_detached({"sh", "-c", "echo $PPID $(cut -d' ' -f6 /proc/$$/stat)"}, o);
  g_slow_middle = false;
  ASSERT_GT(pid, 0);
  ASSERT_TRUE(wait_for_file_text(dir.file("parent"), "\n"));
  std::istringstream in(unit::read_all(dir.file("parent")));
  pid_t parent = 0, session = 0;
  in >> parent >> session;
  ASSERT_GT(session, 0) << unit::read_all(dir.file("parent"));
  EXPECT_NE(parent, session) << "the program started while the middle process (pid " << session
                             << ") was still its parent";
}

// A descriptor this process holds without O_CLOEXEC (a listening socket, say) is not
// inherited by a detached server; an ordinary child does inherit it.
TEST(UnitSubprocess, DetachedChildInheritsNoDescriptorAboveStderr) {
  unit::TempDir dir;
  int leak[2];
  ASSERT_EQ(::pipe(leak), 0);  // deliberately without O_CLOEXEC
  std::string script = "if [ -e /proc/$$/fd/" + std::to_string(leak[0]) + " ]; then echo inherited; else echo closed; fi";
  SpawnOptions o;
  o.stdout_path = dir.file("detached");
  pid_t pid = Subprocess::spawn_detached({"sh", "-c", script}, o);
  ASSERT_GT(pid, 0);
  EXPECT_TRUE(wait_for_file_text(dir.file("detached"), "\n"));
  EXPECT_EQ(unit::read_all(dir.file("detached")), "closed\n");
  std::string ordinary = run_sh(script, {}, dir.file("ordinary"));
  EXPECT_EQ(ordinary, "inherited\n");  // the check above can see a leak
  ::close(leak[0]);
  ::close(leak[1]);
}

TEST(UnitSubprocess, DetachedProgramThatCannotRunExitsAtOnce) {
  pid_t pid = Subprocess::spawn_detached({"mk-unit-no-such-program-4711"});
  ASSERT_GT(pid, 0);
  int fd = pidfd_of(pid);
  if (fd >= 0) {  // else reaped already
    EXPECT_TRUE(exits_within(fd, 20s));
    ::close(fd);
  }
}

TEST(UnitSubprocess, DetachedEmptyCommandOrUnwritableLogThrows) {
  unit::TempDir dir;
  EXPECT_THROW(Subprocess::spawn_detached({}), Error);
  SpawnOptions o;
  o.stdout_path = dir.file("no-such-dir/out.log");
  EXPECT_THROW(Subprocess::spawn_detached({"true"}, o), Error);
}

}  // namespace
}  // namespace mk
