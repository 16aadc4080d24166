// The tunnel-session helper (oma/pairing/tunnel_session_helper.h), as the package runs
// it: the real oma-end-tunnel-session binary behind a socket that starts one instance
// per connection with the connection as stdin and stdout (systemd-socket-activate
// --accept --inetd, which is what the socket unit's Accept=yes does), as root with only
// CAP_KILL and CAP_SYS_PTRACE and the unit's view of /proc (see sandboxed()). The sessions are a real sshd's, for the user "nobody" (a user that
// exists on every Debian system, so no account is made for the tests): its session
// process runs as nobody and is not dumpable, as the package's "migratekit" sessions are.
//
// Needs root (the suite runs as root here and in CI), /usr/sbin/sshd, setpriv, unshare
// and systemd-socket-activate.
#include <gtest/gtest.h>
#include <fmt/format.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/subprocess.h"
#include "oma/pairing/ssh_sessions.h"
#include "oma/pairing/tunnel_session_helper.h"
#include "support/files.h"
#include "support/net.h"
#include "support/sshd_server.h"
#include "support/temp_dir.h"
#include "tunnel_lab.h"

namespace {

using mk::oma::TunnelSessionEnd;
using O = TunnelSessionEnd::Outcome;
using mk::tunnel_test::eventually;

constexpr const char* kTunnelUser = "nobody";

uid_t uid_of(const char* user) {
  passwd* pw = ::getpwnam(user);
  if (!pw) throw mk::Error(fmt::format("no user {} on this machine", user));
  return pw->pw_uid;
}

bool listening(int port) { return !mk::oma::loopback_listeners(port).empty(); }

// Appends the part of the unit's sandbox that decides what the helper can see and do:
// its own /proc as ProtectProc=invisible and ProcSubset=pid mount it (other users'
// processes only with ptrace access; no /proc/net), CapabilityBoundingSet=`caps` and
// NoNewPrivileges=yes.
void sandboxed(std::vector<std::string>& argv, const std::string& caps) {
  argv.insert(argv.end(), {"unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                           "mount -t proc -o hidepid=invisible,subset=pid proc /proc && exec \"$@\"", "sh",
                           "setpriv", "--bounding-set=-all," + caps, "--inh-caps=-all", "--no-new-privs"});
}

// The helper behind its socket, started as the socket unit starts it.
class HelperService {
 public:
  explicit HelperService(std::vector<std::string> helper_args = {}) {
    std::vector<std::string> argv = {"systemd-socket-activate", "--accept", "--inetd", "-l", socket_};
    sandboxed(argv, "+kill,+sys_ptrace");
    argv.insert(argv.end(), {HELPER_BIN, "--tunnel-user", kTunnelUser, "--grace-ms", "3000"});
    argv.insert(argv.end(), helper_args.begin(), helper_args.end());
    mk::SpawnOptions so;
    so.stdout_path = so.stderr_path = log_;
    process_ = mk::Subprocess::spawn(argv, so);
    for (int i = 0; i < 1500 && !std::filesystem::exists(socket_); ++i) {
      if (!process_.running()) throw mk::Error("systemd-socket-activate exited: " + mk::test::log_tail(log_));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!std::filesystem::exists(socket_)) throw mk::Error("no helper socket: " + mk::test::log_tail(log_));
  }
  ~HelperService() { process_.stop(); }
  const std::string& socket() const { return socket_; }
  std::string log() const { return mk::test::log_tail(log_, 20000); }
  TunnelSessionEnd ask(int port) { return mk::oma::end_vma_tunnel_session(port, socket_); }

 private:
  mk::test::TempDir dir_{"mk-tunnel-helper"};
  std::string socket_ = dir_.file("end-tunnel.sock"), log_ = dir_.file("helper.log");
  mk::Subprocess process_;
};

// A real sshd and `ssh -N -R` sessions to it, as `nobody` or as root.
class SshLab {
 public:
  SshLab() {
    std::string out;
    if (mk::run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key_}, out) != 0)
      throw mk::Error("ssh-keygen failed");
    std::filesystem::copy_file(key_ + ".pub", keys_);
    // The tunnel user reads no file of ours: its keys come as the package's drop-in gives them.
    sshd_ = std::make_unique<mk::test::SshdServer>(mk::test::SshdOptions{
        .authorized_keys_file = keys_,
        .extra = {fmt::format("Match User {}", kTunnelUser), "    AuthorizedKeysFile none",
                  "    AuthorizedKeysCommand /usr/bin/cat " + keys_, "    AuthorizedKeysCommandUser root",
                  "    ForceCommand /bin/false", "    PermitListen 127.0.0.1:*", "Match all"}});
    std::ofstream(known_) << fmt::format("[127.0.0.1]:{} {}\n", sshd_->port(), sshd_->host_public_key());
  }
  ~SshLab() {
    for (auto& s : sessions_) s.stop();
  }
  // `ssh -N -R 127.0.0.1:port:...` as `user`; returns once the forward listens.
  mk::Subprocess& open(const std::string& user, int port) {
    mk::SpawnOptions so;
    so.stdout_path = so.stderr_path = dir_.file("ssh.log");
    sessions_.push_back(mk::Subprocess::spawn(
        {"ssh", "-N", "-i", key_, "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o",
         "UserKnownHostsFile=" + known_, "-o", "StrictHostKeyChecking=yes", "-o", "ExitOnForwardFailure=yes", "-R",
         fmt::format("127.0.0.1:{}:127.0.0.1:{}", port, sshd_->port()), "-p", std::to_string(sshd_->port()), "--",
         user + "@127.0.0.1"},
        so));
    mk::Subprocess& s = sessions_.back();
    if (!eventually([&] { return listening(port) || !s.running(); }, std::chrono::seconds(30)) || !listening(port))
      throw mk::Error("the forward did not come up: " + mk::test::log_tail(dir_.file("ssh.log")) +
                      mk::test::log_tail(sshd_->log_path()));
    return s;
  }

 private:
  mk::test::TempDir dir_{"mk-ssh-lab"};
  std::string key_ = dir_.file("id_ed25519"), keys_ = dir_.file("authorized_keys"), known_ = dir_.file("known_hosts");
  std::unique_ptr<mk::test::SshdServer> sshd_;
  std::vector<mk::Subprocess> sessions_;
};

TEST(TunnelHelper, EndsTheTunnelUsersSessionWithOnlyKillAndPtrace) {
  SshLab ssh;
  HelperService helper;
  int port = mk::test::free_tcp_port();
  mk::Subprocess& client = ssh.open(kTunnelUser, port);
  auto session = mk::oma::tunnel_session_pid(port);  // this test runs as root: it sees it
  ASSERT_TRUE(session);
  std::ifstream status(fmt::format("/proc/{}/status", *session));
  std::string text((std::istreambuf_iterator<char>(status)), {});
  ASSERT_NE(text.find(fmt::format("Uid:\t{0}\t{0}\t{0}\t{0}", uid_of(kTunnelUser))), std::string::npos)
      << "the session should run as the tunnel user: " << text;

  TunnelSessionEnd e = helper.ask(port);
  EXPECT_EQ(e.outcome, O::Ended) << e.message << "\n" << helper.log();
  EXPECT_EQ(e.pid, session);
  EXPECT_NE(e.message.find("the tunnel-session helper: the sshd session"), std::string::npos) << e.message;
  EXPECT_FALSE(listening(port));
  EXPECT_TRUE(eventually([&] { return !client.running(); }, std::chrono::seconds(20)));  // the VMA's side saw it end
  // The journal (here the log) names the asker and the outcome.
  EXPECT_NE(helper.log().find(fmt::format("uid 0 (pid {}) asks to end the tunnel session on 127.0.0.1:{}", getpid(),
                                          port)),
            std::string::npos)
      << helper.log();

  // Nothing listens any more: said so, nothing signalled.
  e = helper.ask(port);
  EXPECT_EQ(e.outcome, O::NoSession) << e.message;
}

TEST(TunnelHelper, WithoutPtraceItCannotFindTheSessionAndSaysSo) {
  // Why the unit grants CAP_SYS_PTRACE: the session is not dumpable, its /proc/PID/fd
  // is closed even to root without it.
  SshLab ssh;
  mk::test::TempDir dir("mk-tunnel-helper-kill-only");
  std::string sock = dir.file("s.sock"), log = dir.file("log");
  mk::SpawnOptions so;
  so.stdout_path = so.stderr_path = log;
  std::vector<std::string> argv = {"systemd-socket-activate", "--accept", "--inetd", "-l", sock};
  sandboxed(argv, "+kill");
  argv.insert(argv.end(), {HELPER_BIN, "--tunnel-user", kTunnelUser});
  auto service = mk::Subprocess::spawn(argv, so);
  ASSERT_TRUE(eventually([&] { return std::filesystem::exists(sock); }, std::chrono::seconds(15)));
  int port = mk::test::free_tcp_port();
  ssh.open(kTunnelUser, port);
  TunnelSessionEnd e = mk::oma::end_vma_tunnel_session(port, sock);
  EXPECT_EQ(e.outcome, O::Failed) << e.message;
  EXPECT_NE(e.message.find("CAP_SYS_PTRACE"), std::string::npos) << e.message;
  EXPECT_TRUE(listening(port));
  service.stop();
}

TEST(TunnelHelper, RefusesAPortHeldByAProgramThatIsNotSshd) {
  // Even a program of the tunnel user itself: only an sshd session is ever signalled.
  HelperService helper;
  int port = mk::test::free_tcp_port();
  mk::test::TempDir dir("mk-tunnel-helper-listener");
  mk::SpawnOptions so;
  so.stdout_path = so.stderr_path = dir.file("listener.log");
  auto listener = mk::Subprocess::spawn(
      {"setpriv", "--reuid=" + std::to_string(uid_of(kTunnelUser)), "--regid=" + std::to_string(uid_of(kTunnelUser)),
       "--clear-groups", "/usr/bin/python3", "-c",
       fmt::format("import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {}))\ns.listen()\ntime.sleep(600)",
                   port)},
      so);
  ASSERT_TRUE(eventually([&] { return listening(port) || !listener.running(); }, std::chrono::seconds(15)));
  ASSERT_TRUE(listening(port)) << mk::test::log_tail(dir.file("listener.log"));
  TunnelSessionEnd e = helper.ask(port);
  EXPECT_EQ(e.outcome, O::Refused) << e.message;
  // A process of the user that exec'd after changing uid is dumpable: its /proc/PID/fd
  // is closed to the helper (which has no CAP_DAC_READ_SEARCH), unlike sshd's sessions.
  EXPECT_NE(e.message.find("so not by an sshd session of the tunnel user"), std::string::npos) << e.message;
  EXPECT_NE(e.message.find(fmt::format("{} (python3", listener.pid())), std::string::npos) << e.message;
  EXPECT_TRUE(listener.running());
  EXPECT_TRUE(listening(port));
  listener.stop();

  // One that made itself undumpable, as sshd's sessions are: visible, and still refused
  // (its executable is not sshd).
  port = mk::test::free_tcp_port();
  auto hidden = mk::Subprocess::spawn(
      {"setpriv", "--reuid=" + std::to_string(uid_of(kTunnelUser)), "--regid=" + std::to_string(uid_of(kTunnelUser)),
       "--clear-groups", "/usr/bin/python3", "-c",
       fmt::format("import ctypes, socket, time\nctypes.CDLL(None).prctl(4, 0, 0, 0, 0)\ns = socket.socket()\n"
                   "s.bind(('127.0.0.1', {}))\ns.listen()\ntime.sleep(600)",
                   port)},
      so);
  ASSERT_TRUE(eventually([&] { return listening(port) || !hidden.running(); }, std::chrono::seconds(15)));
  e = helper.ask(port);
  EXPECT_EQ(e.outcome, O::Refused) << e.message;
  EXPECT_NE(e.message.find(fmt::format("is held by pid {} (/usr/bin/python3", hidden.pid())), std::string::npos)
      << e.message;
  EXPECT_NE(e.message.find("which is not an sshd session of the tunnel user"), std::string::npos) << e.message;
  EXPECT_TRUE(hidden.running());
  hidden.stop();
}

TEST(TunnelHelper, RefusesAnotherUsersSshdSession) {
  SshLab ssh;
  HelperService helper;
  int port = mk::test::free_tcp_port();
  mk::Subprocess& root_session = ssh.open("root", port);
  TunnelSessionEnd e = helper.ask(port);
  EXPECT_EQ(e.outcome, O::Refused) << e.message;
  EXPECT_NE(e.message.find("belongs to uid 0, not to the tunnel user"), std::string::npos) << e.message;
  EXPECT_TRUE(listening(port));
  EXPECT_TRUE(root_session.running());
}

TEST(TunnelHelper, RefusesAnAskerThatIsNeitherRootNorTheOmasUser) {
  HelperService helper({"--client-user", "root"});
  // Open the socket to everyone (the package's is 0660 root:oma): the helper's own check
  // is what is tested here.
  ASSERT_EQ(::chmod(std::filesystem::path(helper.socket()).parent_path().c_str(), 0755), 0);
  ASSERT_EQ(::chmod(helper.socket().c_str(), 0666), 0);
  std::string out;
  int rc = mk::run_capture(
      {"setpriv", "--reuid=" + std::to_string(uid_of(kTunnelUser)), "--regid=" + std::to_string(uid_of(kTunnelUser)),
       "--clear-groups", "/usr/bin/python3", "-c",
       fmt::format("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('{}')\n"
                   "s.sendall(b'{{\"port\": 9081}}\\n')\nprint(s.makefile().readline())",
                   helper.socket())},
      out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"outcome\":\"refused\""), std::string::npos) << out;
  EXPECT_NE(out.find(fmt::format("uid {} (pid", uid_of(kTunnelUser))), std::string::npos) << out;
  EXPECT_NE(out.find("may not ask"), std::string::npos) << out;
}

TEST(TunnelHelper, AMalformedRequestIsRefused) {
  HelperService helper;
  std::string out;
  int rc = mk::run_capture(
      {"/usr/bin/python3", "-c",
       fmt::format("import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('{}')\n"
                   "s.sendall(b'{{\"port\": \"9081; kill -9 1\"}}\\n')\nprint(s.makefile().readline())",
                   helper.socket())},
      out);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("\"outcome\":\"refused\""), std::string::npos) << out;
  EXPECT_NE(out.find("malformed request"), std::string::npos) << out;
}

// The OMA end to end: VMAs log in as the tunnel user (not root), the OMA is told to use
// the helper, and revoking a VMA ends its live session through it.
TEST(TunnelHelper, RevocationEndsTheVmasSessionThroughTheHelper) {
  HelperService helper;
  mk::tunnel_test::TunnelLab lab({.ssh_user = kTunnelUser, .tunnel_session_helper = helper.socket()});
  auto vma = lab.make_vma("site-a");
  ASSERT_EQ(mk::tunnel_test::wait_state(*vma->tunnel, mk::protocol::TunnelState::Up).state,
            mk::protocol::TunnelState::Up)
      << vma->tunnel->state().error.value_or("") << lab.sshd().log();
  int port = static_cast<int>(vma->paired.tunnel_port);
  auto session = mk::oma::tunnel_session_pid(port);
  ASSERT_TRUE(session);
  auto r = mk::tunnel_test::http("POST", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/revoke",
                                 lab.admin());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["session_ended"], true) << r.raw << helper.log();
  EXPECT_EQ(r.body["session_outcome"], "ended") << r.raw;
  EXPECT_EQ(r.body["session_pid"], *session) << r.raw;
  EXPECT_NE(r.body["session_detail"].get<std::string>().find("the tunnel-session helper: the sshd session"),
            std::string::npos)
      << r.raw;
  EXPECT_TRUE(r.body["warning"].is_null()) << r.raw;
  EXPECT_FALSE(listening(port));
  EXPECT_NE(helper.log().find(fmt::format("asks to end the tunnel session on 127.0.0.1:{}", port)), std::string::npos);
}

// A helper that is not there: the revocation still removes the key, and its answer says
// that the session may still be up and what to check.
TEST(TunnelHelper, RevocationSaysSoWhenTheHelperCannotBeReached) {
  mk::test::TempDir dir("mk-no-helper");
  mk::tunnel_test::TunnelLab lab({.ssh_user = kTunnelUser, .tunnel_session_helper = dir.file("absent.sock")});
  auto vma = lab.make_vma("site-a");
  ASSERT_EQ(mk::tunnel_test::wait_state(*vma->tunnel, mk::protocol::TunnelState::Up).state,
            mk::protocol::TunnelState::Up);
  auto r = mk::tunnel_test::http("POST", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/revoke",
                                 lab.admin());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["session_ended"], false) << r.raw;
  EXPECT_EQ(r.body["session_outcome"], "failed") << r.raw;
  EXPECT_EQ(r.body["state"], "revoked") << r.raw;
  std::string warning = r.body["warning"].is_string() ? r.body["warning"].get<std::string>() : "";
  EXPECT_NE(warning.find("migratekit-oma-end-tunnel.socket"), std::string::npos) << r.raw;
}

}  // namespace
