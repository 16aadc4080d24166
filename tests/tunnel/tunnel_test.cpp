// The SSH control tunnel end to end: OpenSSH's client under the TunnelSupervisor, a real
// sshd reading the OMA-managed authorized_keys, and what the OMA and sshd allow.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/files.h"
#include "common/subprocess.h"
#include "fake_vma.h"
#include "oma/pairing/ssh_sessions.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "support/x509.h"
#include "support/net.h"
#include <ctime>

#include "tunnel_lab.h"

namespace mk::tunnel_test {
namespace {

using nlohmann::json;
constexpr auto Up = protocol::TunnelState::Up;
constexpr auto Down = protocol::TunnelState::Down;

// An Authorization header for GET /api/v1/health signed with `v`'s token, as the OMA signs.
std::string signed_health(const Vma& v) {
  return protocol::sign_request(mk::vma::read_api_token(v.state_dir), "GET", "/api/v1/health", "",
                                static_cast<int64_t>(std::time(nullptr)), protocol::new_nonce());
}

// GET /api/v1/health of the VMA through the OMA's end of its tunnel.
Reply health_through_tunnel(const Vma& v) {
  return http("GET", v.paired.tunnel_port, "/api/v1/health", signed_health(v));
}

bool tunnel_answers(const Vma& v) {
  try {
    return health_through_tunnel(v).status == 200;
  } catch (const std::exception&) {
    return false;
  }
}

// Whether an NBD client with this PSK file (its one identity) can open the export.
bool psk_nbd_opens(const std::string& psk_file, int port, const std::string& export_name) {
  std::string psk = mk::test::read_file(psk_file), out;
  std::string identity = psk.substr(0, psk.find(':'));
  return mk::run_capture({"nbdinfo", "--size",
                          fmt::format("nbds://{}@127.0.0.1:{}/{}?tls-psk-file={}", identity, port, export_name,
                                      psk_file)},
                         out) == 0;
}

std::string cmdline(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/cmdline", pid), std::ios::binary);  // size 0 to stat: stream it
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

// ssh with the VMA's key and pinned host key, and `extra` arguments (no shell).
std::vector<std::string> vma_ssh(const Vma& v, std::vector<std::string> extra) {
  std::vector<std::string> argv = {"ssh", "-F", "/dev/null", "-p", std::to_string(v.paired.ssh_port), "-l",
                                   v.paired.ssh_user, "-i", v.paired.identity(), "-o", "IdentitiesOnly=yes",
                                   "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                                   "-o", "UserKnownHostsFile=" + v.paired.known_hosts(),
                                   "-o", "HostKeyAlias=migratekit-oma", "-o", "ExitOnForwardFailure=yes"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

TEST(TunnelUnit, SshCommandPinsTheHostKeyAndAllowsOnlyTheForwards) {
  mk::vma::TunnelConfig c;
  c.ssh_host = "oma.example";
  c.ssh_port = 443;
  c.identity_file = "/var/lib/vma/id_ed25519";
  c.known_hosts_file = "/var/lib/vma/known_hosts";
  c.remote_port = 9082;
  c.local_api_port = 8081;
  std::string cmd;
  for (const auto& a : mk::vma::ssh_command(c)) cmd += a + " ";
  for (const char* want : {"-N ", "-F /dev/null ", "-p 443 ", "StrictHostKeyChecking=yes ", "BatchMode=yes ",
                           "IdentitiesOnly=yes ", "ExitOnForwardFailure=yes ", "ServerAliveInterval=15 ",
                           "ServerAliveCountMax=3 ", "UserKnownHostsFile=/var/lib/vma/known_hosts ",
                           "-R 127.0.0.1:9082:127.0.0.1:8081 ", "Ciphers=^aes128-gcm@openssh.com,",
                           "oma.example "})
    EXPECT_NE(cmd.find(want), std::string::npos) << want << " in " << cmd;
  EXPECT_EQ(cmd.find("-L"), std::string::npos) << cmd;
  // The host comes last, after "--": ssh never reads it as an option.
  auto argv = mk::vma::ssh_command(c);
  ASSERT_GE(argv.size(), 2u);
  EXPECT_EQ(argv[argv.size() - 2], "--");
  EXPECT_EQ(argv.back(), "oma.example");
  c.nbd_local_port = 10810;
  c.nbd_remote_port = 10809;
  cmd.clear();
  for (const auto& a : mk::vma::ssh_command(c)) cmd += a + " ";
  EXPECT_NE(cmd.find("-L 127.0.0.1:10810:127.0.0.1:10809 "), std::string::npos) << cmd;
}

TEST(TunnelUnit, SshFailuresAreExplainedWithWhatToDo) {
  using mk::vma::explain_ssh_failure;
  EXPECT_NE(explain_ssh_failure("debug1: x\n@@@@\nHost key verification failed.\n").find("pair again"),
            std::string::npos);
  EXPECT_NE(explain_ssh_failure("debug1: x\nroot@127.0.0.1: Permission denied (publickey).\n").find("approve"),
            std::string::npos);
  EXPECT_NE(explain_ssh_failure("Error: remote port forwarding failed for listen port 9081\n").find("port"),
            std::string::npos);
  EXPECT_NE(explain_ssh_failure("ssh: connect to host 10.0.0.1 port 22: Connection refused\n").find("firewall"),
            std::string::npos);
  EXPECT_EQ(explain_ssh_failure("debug1: only debug\nOpenSSH_9.2p1\n"), "");
}

TEST(Tunnel, ApprovedTunnelCarriesTheVmaApiAndShowsInBothHealths) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a");
  auto st = wait_state(*vma->tunnel, Up);
  ASSERT_EQ(st.state, Up) << st.error.value_or("");
  EXPECT_FALSE(st.error);

  Reply h = health_through_tunnel(*vma);
  ASSERT_EQ(h.status, 200) << h.raw;
  EXPECT_EQ(h.body["vma_instance"], vma->instance);
  EXPECT_EQ(h.body["tunnel"]["state"], "up");
  EXPECT_EQ(http("GET", vma->paired.tunnel_port, "/api/v1/health", "").status, 401);

  Reply oh = http("GET", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/health", lab.admin());
  ASSERT_EQ(oh.status, 200) << oh.raw;
  EXPECT_EQ(oh.body["tunnel"]["state"], "up") << oh.raw;
  EXPECT_EQ(oh.body["vma"]["status"], "ok") << oh.raw;
  EXPECT_EQ(oh.body["vma"]["tunnel"]["state"], "up") << oh.raw;
  EXPECT_TRUE(oh.body["error"].is_null()) << oh.raw;
  Reply list = http("GET", lab.api_port(), "/api/v1/vmas", lab.admin());
  EXPECT_EQ(list.body["vmas"][0]["tunnel_state"], "up") << list.raw;
  Reply oma_health = http("GET", lab.api_port(), "/health", "");
  EXPECT_EQ(oma_health.body["vma_tunnels"]["up"], 1) << oma_health.raw;
  EXPECT_EQ(oma_health.body["vma_tunnels"]["down"], 0) << oma_health.raw;
  std::string metrics = http("GET", lab.api_port(), "/metrics", lab.admin()).raw;
  EXPECT_NE(metrics.find("oma_vma_tunnels{state=\"up\"} 1"), std::string::npos) << metrics;

  // No secret on ssh's command line or in its log or sshd's.
  pid_t pid = vma->tunnel->ssh_pid();
  ASSERT_GT(pid, 0);
  std::string cmd = cmdline(pid);
  EXPECT_NE(cmd.find("ssh -N"), std::string::npos) << cmd;
  std::string key = mk::test::read_file(vma->paired.identity());
  std::string key_body = key.substr(key.find('\n') + 1, 40);
  std::string psk = mk::test::read_file(vma->paired.psk_file());
  for (const std::string& secret :
       {mk::vma::read_api_token(vma->state_dir), psk.substr(psk.find(':') + 1, 64), key_body}) {
    EXPECT_EQ(cmd.find(secret), std::string::npos);
    EXPECT_EQ(mk::test::read_file(vma->tunnel->config().log_path).find(secret), std::string::npos);
    EXPECT_EQ(lab.sshd().log().find(secret), std::string::npos);
  }
  // NBD data may ride this connection: AES-GCM was negotiated, not OpenSSH's default
  // ChaCha20-Poly1305 (ssh -v logs the choice).
  EXPECT_NE(mk::test::read_file(vma->tunnel->config().log_path).find("client->server cipher: aes128-gcm@openssh.com"),
            std::string::npos)
      << mk::test::read_file(vma->tunnel->config().log_path);
  // The OMA finds the sshd session holding the forward (what revocation ends).
  auto session = mk::oma::tunnel_session_pid(vma->paired.tunnel_port);
  ASSERT_TRUE(session);
  EXPECT_NE(*session, pid);
}

TEST(Tunnel, APendingVmaWaitsForApprovalThenComesUp) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", /*approve=*/false);
  ASSERT_TRUE(eventually([&] {
    auto s = vma->tunnel->state();
    return s.state == Down && s.error && s.error->find("approve") != std::string::npos;
  })) << vma->tunnel->state().error.value_or("(none)");
  EXPECT_FALSE(mk::oma::loopback_port_answers(vma->paired.tunnel_port));
  lab.approve(vma->paired.vma_id);
  auto st = wait_state(*vma->tunnel, Up);
  ASSERT_EQ(st.state, Up) << st.error.value_or("");
  EXPECT_TRUE(eventually([&] { return tunnel_answers(*vma); }));
}

TEST(Tunnel, SshdGrantsTheVmaKeyItsForwardsAndNothingElse) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", true, false, /*start_tunnel=*/false);
  mk::test::TempDir tmp("mk-ssh");
  std::string out;

  // Another listen port on the OMA: refused, ssh exits.
  int other = mk::test::free_tcp_port();
  int rc = mk::run_capture(vma_ssh(*vma, {"-N", "-R", fmt::format("127.0.0.1:{}:127.0.0.1:22", other), "127.0.0.1"}),
                           out, tmp.file("r.err"));
  EXPECT_EQ(rc, 255);
  EXPECT_NE(mk::test::read_file(tmp.file("r.err")).find("remote port forwarding failed"), std::string::npos)
      << mk::test::read_file(tmp.file("r.err"));
  // Its own port on all interfaces: refused too.
  rc = mk::run_capture(
      vma_ssh(*vma, {"-N", "-R", fmt::format("0.0.0.0:{}:127.0.0.1:22", vma->paired.tunnel_port), "127.0.0.1"}), out,
      tmp.file("r2.err"));
  EXPECT_EQ(rc, 255);

  // A shell command: /bin/false runs instead.
  rc = mk::run_capture(vma_ssh(*vma, {"127.0.0.1", "echo", "shell-ran"}), out, tmp.file("s.err"));
  EXPECT_NE(rc, 0);
  EXPECT_EQ(out.find("shell-ran"), std::string::npos) << out;

  // Local forwards: to the OMA's NBD port yes, to anything else (its API) no.
  int to_api = mk::test::free_tcp_port(), to_nbd = mk::test::free_tcp_port();
  int nbd = lab.oma().export_server().port();
  mk::SpawnOptions so;
  so.stderr_path = tmp.file("l.err");
  auto ssh = mk::Subprocess::spawn(
      vma_ssh(*vma, {"-N", "-L", fmt::format("127.0.0.1:{}:127.0.0.1:{}", to_api, lab.api_port()), "-L",
                     fmt::format("127.0.0.1:{}:127.0.0.1:{}", to_nbd, nbd), "127.0.0.1"}),
      so);
  mk::test::wait_for_tcp_port(to_nbd, {"ssh -L", tmp.file("l.err"), &ssh});
  mk::test::wait_for_tcp_port(to_api, {"ssh -L", tmp.file("l.err"), &ssh});
  EXPECT_THROW(http("GET", to_api, "/health", ""), mk::Error);
  EXPECT_EQ(http("GET", lab.api_port(), "/health", "").status, 200);  // the API itself is fine
  EXPECT_NE(lab.sshd().log().find(fmt::format("to connect to host 127.0.0.1 port {}, but the request was denied",
                                              lab.api_port())),
            std::string::npos)
      << lab.sshd().log();
  // The NBD forward reaches nbdkit: it speaks first (the NBD greeting, "NBDMAGIC").
  std::string greeting;
  EXPECT_EQ(mk::run_capture({"python3", "-c",
                             fmt::format("import socket;s=socket.create_connection(('127.0.0.1',{}));"
                                         "print(s.recv(8).decode())", to_nbd)},
                            greeting),
            0);
  EXPECT_EQ(greeting, "NBDMAGIC\n");
  ssh.stop();
}

TEST(Tunnel, WrongHostKeyIsRefusedWithAClearError) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", true, false, /*start_tunnel=*/false);
  mk::test::TempDir tmp("mk-key");
  std::string out;
  ASSERT_EQ(mk::run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp.file("other")}, out), 0);
  std::string other = mk::test::read_file(tmp.file("other.pub"));
  mk::write_private_file(vma->paired.known_hosts(), "migratekit-oma " + other.substr(0, other.rfind(' ')) + "\n");
  vma->tunnel->start();
  ASSERT_TRUE(eventually([&] { return vma->tunnel->attempts() >= 2; }));
  auto st = vma->tunnel->state();
  EXPECT_NE(st.state, Up);
  ASSERT_TRUE(st.error || st.state == protocol::TunnelState::Connecting);
  EXPECT_TRUE(eventually([&] {
    auto s = vma->tunnel->state();
    return s.state == Down && s.error && s.error->find("host key does not match") != std::string::npos;
  })) << vma->tunnel->state().error.value_or("(none)");
  EXPECT_FALSE(mk::oma::loopback_port_answers(vma->paired.tunnel_port));
}

// The start times of ssh, as a wrapper around it wrote them (ns since the epoch).
std::vector<int64_t> attempt_times(const std::string& path) {
  std::vector<int64_t> t;
  std::ifstream f(path);
  for (int64_t v; f >> v;) t.push_back(v);
  return t;
}

int64_t realtime_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

TEST(Tunnel, FailedAttemptsBackOffDoublingAndAnUpTunnelStartsTheBackoffOver) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", true, false, /*start_tunnel=*/false);
  mk::test::TempDir dir("mk-backoff");
  const std::string stamps = dir.file("attempts");
  const std::string wrapper = dir.file("ssh");
  mk::write_private_file(wrapper, fmt::format("#!/bin/sh\ndate +%s%N >>'{}'\nexec ssh \"$@\"\n", stamps));
  std::filesystem::permissions(wrapper, std::filesystem::perms::owner_all);
  // Every attempt fails at once: the pinned OMA host key is another one.
  const std::string pinned = mk::test::read_file(vma->paired.known_hosts());
  std::string out;
  ASSERT_EQ(mk::run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file("other")}, out), 0);
  std::string other = mk::test::read_file(dir.file("other.pub"));
  mk::write_private_file(vma->paired.known_hosts(), "migratekit-oma " + other.substr(0, other.rfind(' ')) + "\n");

  auto tc = mk::vma::tunnel_config(vma->paired, vma->api->port());
  tc.ssh_binary = wrapper;
  const int64_t initial_ms = 200;
  tc.backoff_initial = std::chrono::milliseconds(initial_ms);
  tc.backoff_max = std::chrono::minutes(5);
  vma->tunnel = std::make_unique<mk::vma::TunnelSupervisor>(tc);
  vma->tunnel->start();

  // Five failed attempts: each waited at least twice as long as the one before it
  // (200, 400, 800, 1600 ms at least: a constant or reset backoff is far below).
  ASSERT_TRUE(eventually([&] { return attempt_times(stamps).size() >= 5; }));
  auto t = attempt_times(stamps);
  for (size_t i = 1; i < 5; ++i) {
    const int64_t gap_ms = (t[i] - t[i - 1]) / 1'000'000;
    EXPECT_GE(gap_ms, initial_ms << (i - 1)) << "attempt " << i + 1;
  }

  // The key is right again: the attempt after the next wait brings the tunnel up.
  mk::write_private_file(vma->paired.known_hosts(), pinned);
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up) << vma->tunnel->state().error.value_or("");
  const size_t up_attempts = attempt_times(stamps).size();
  ASSERT_GE(up_attempts, 5u);
  // ssh dies: having been up, the next attempt waits the initial delay again, not the
  // 3.2 s or more the failures had reached (half of that is the bound: a margin for load).
  const int64_t killed = realtime_ns();
  ASSERT_EQ(::kill(vma->tunnel->ssh_pid(), SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return attempt_times(stamps).size() > up_attempts; }));
  const int64_t next_ms = (attempt_times(stamps)[up_attempts] - killed) / 1'000'000;
  EXPECT_GE(next_ms, initial_ms);
  EXPECT_LT(next_ms, (initial_ms << (up_attempts - 1)) / 2);
  EXPECT_EQ(wait_state(*vma->tunnel, Up).state, Up) << vma->tunnel->state().error.value_or("");
}

TEST(Tunnel, KilledSshIsRestartedWithBackoffAndTheForwardWorksAgain) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a");
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up);
  pid_t first = vma->tunnel->ssh_pid();
  ASSERT_GT(first, 0);
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] {
    pid_t p = vma->tunnel->ssh_pid();
    return p > 0 && p != first && vma->tunnel->state().state == Up;
  })) << vma->tunnel->state().error.value_or("");
  EXPECT_GE(vma->tunnel->attempts(), 2);
  EXPECT_TRUE(eventually([&] { return tunnel_answers(*vma); }));
}

TEST(Tunnel, KeepAlivesDetectAHungOmaSessionAndTheTunnelRecovers) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a");
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up);
  auto session = mk::oma::tunnel_session_pid(vma->paired.tunnel_port);
  ASSERT_TRUE(session);
  pid_t first = vma->tunnel->ssh_pid();
  // The OMA's end stops answering (its kernel still acknowledges TCP): only SSH
  // keep-alives can tell.
  ASSERT_EQ(::kill(*session, SIGSTOP), 0);
  ASSERT_TRUE(eventually([&] { return vma->tunnel->ssh_pid() != first; }))
      << vma->tunnel->state().state << " " << vma->tunnel->state().error.value_or("");
  // While the stale session still holds the port, the new forward is refused and
  // retried; once it is gone (sshd's own client keep-alives end it on a real OMA) the
  // tunnel comes back.
  EXPECT_TRUE(eventually([&] {
    auto e = vma->tunnel->state().error;
    return e && (e->find("keep-alives") != std::string::npos || e->find("forward") != std::string::npos);
  })) << vma->tunnel->state().error.value_or("(none)");
  ASSERT_EQ(::kill(*session, SIGKILL), 0);
  ASSERT_TRUE(eventually([&] { return vma->tunnel->state().state == Up; }))
      << vma->tunnel->state().error.value_or("");
  EXPECT_TRUE(eventually([&] { return tunnel_answers(*vma); }));
}

TEST(Tunnel, SshdRestartIsFollowedByAReconnection) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a");
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up);
  ASSERT_TRUE(tunnel_answers(*vma));
  int before = vma->tunnel->attempts();
  lab.sshd().restart();
  ASSERT_TRUE(eventually([&] { return vma->tunnel->attempts() > before && vma->tunnel->state().state == Up; }))
      << vma->tunnel->state().error.value_or("");
  EXPECT_TRUE(eventually([&] { return tunnel_answers(*vma); }));
}

TEST(Tunnel, RevocationEndsTheSessionAndReconnectionIsRefused) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a");
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up);
  ASSERT_TRUE(tunnel_answers(*vma));
  auto session = mk::oma::tunnel_session_pid(vma->paired.tunnel_port);
  ASSERT_TRUE(session);
  int before = vma->tunnel->attempts();
  // Its own NBD identity opens the OMA's exports while approved (directly, no tunnel).
  mk::test::TempDir dir("mk-revoke");
  mk::test::create_sparse_file(dir.file("disk.img"), 1 << 20);
  std::string exp = "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001-disk0";
  ASSERT_EQ(lab.add_vm("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001", vma->paired.vma_id), 201);  // served to its VMA only
  lab.oma().export_server().publish(exp, dir.file("disk.img"));
  int nbd = lab.oma().export_server().port();
  EXPECT_TRUE(psk_nbd_opens(vma->paired.psk_file(), nbd, exp));

  Reply r = http("POST", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/revoke", lab.admin());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["session_ended"], true) << r.raw;
  EXPECT_EQ(r.body["session_pid"], *session) << r.raw;
  EXPECT_TRUE(r.body["warning"].is_null()) << r.raw;
  EXPECT_FALSE(psk_nbd_opens(vma->paired.psk_file(), nbd, exp));  // its NBD identity is gone too
  EXPECT_TRUE(psk_nbd_opens(lab.oma().config().tls_psk_file, nbd, exp));  // the OMA's own still works

  // The VMA tries again (with backoff) and is refused every time.
  ASSERT_TRUE(eventually([&] { return vma->tunnel->attempts() >= before + 2; }));
  EXPECT_TRUE(eventually([&] {
    auto s = vma->tunnel->state();
    return s.state == Down && s.error && s.error->find("refused this VMA's key") != std::string::npos;
  })) << vma->tunnel->state().error.value_or("(none)");
  EXPECT_FALSE(mk::oma::loopback_port_answers(vma->paired.tunnel_port));
  Reply oh = http("GET", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/health", lab.admin());
  EXPECT_EQ(oh.body["state"], "revoked");
  EXPECT_EQ(oh.body["tunnel"]["state"], "down");
  EXPECT_NE(lab.sshd().log().find("Failed publickey for root"), std::string::npos) << lab.sshd().log();
}

TEST(Tunnel, TwoVmasGetDistinctPortsAndEachReachesItsOwn) {
  TunnelLab lab;
  auto a = lab.make_vma("site-a");
  auto b = lab.make_vma("site-b");
  EXPECT_EQ(a->paired.tunnel_port, std::stoi(lab.tunnel_port_base()));
  EXPECT_EQ(b->paired.tunnel_port, a->paired.tunnel_port + 1);
  ASSERT_EQ(wait_state(*a->tunnel, Up).state, Up) << a->tunnel->state().error.value_or("");
  ASSERT_EQ(wait_state(*b->tunnel, Up).state, Up) << b->tunnel->state().error.value_or("");
  EXPECT_EQ(health_through_tunnel(*a).body["vma_instance"], a->instance);
  EXPECT_EQ(health_through_tunnel(*b).body["vma_instance"], b->instance);
  // Each token is its own VMA's: a's token does not open b.
  EXPECT_EQ(http("GET", b->paired.tunnel_port, "/api/v1/health", signed_health(*a)).status, 401);
  for (const auto* v : {a.get(), b.get()}) {
    Reply oh = http("GET", lab.api_port(), "/api/v1/vmas/" + v->paired.vma_id + "/health", lab.admin());
    EXPECT_EQ(oh.body["vma"]["vma_instance"], v->instance) << oh.raw;
  }
}

TEST(Tunnel, NbdThroughTheSshLocalForwardCopiesIdenticalBytes) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", true, /*nbd_forward=*/true);
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up) << vma->tunnel->state().error.value_or("");
  int local = *vma->tunnel->config().nbd_local_port;

  // The OMA's own export server (nbdkit, TLS PSK required) serves the target volume.
  mk::test::TempDir dir("mk-nbd-ssh");
  const uint64_t size = 48ull << 20;
  std::string target = dir.file("target.img"), source = dir.file("source.img");
  mk::test::create_sparse_file(target, size);
  mk::test::create_sparse_file(source, size);
  mk::test::write_random_at(source, 0, 3 << 20, 1);
  mk::test::write_random_at(source, 20 << 20, 5 << 20, 2);
  mk::test::write_random_at(source, size - (1 << 20), 1 << 20, 3);
  std::string exp = "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001-disk0";
  ASSERT_EQ(lab.add_vm("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001", vma->paired.vma_id, size), 201);  // served to its VMA only
  lab.oma().export_server().publish(exp, target);
  mk::test::NbdkitServer src({.plugin = "file", .args = {"file=" + source}, .read_only = true});

  auto r = mk::test::run_migratekit({"copy", src.uri(), fmt::format("nbds://127.0.0.1:{}/{}", local, exp),
                                     "--target-tls-psk", vma->paired.psk_file(), "--verify"},
                                    std::chrono::seconds(180));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(mk::test::files_identical(source, target));
  // Plain NBD without TLS is refused by the OMA's server even through the tunnel.
  auto plain = mk::test::run_migratekit({"copy", src.uri(), fmt::format("nbd://127.0.0.1:{}/{}", local, exp)});
  EXPECT_NE(plain.exit_code, 0);
}

TEST(Tunnel, AnX509OmaGivesItsCaAndNbdThroughTheForwardVerifiesIt) {
  TunnelLab lab(/*x509=*/true);
  json bundle = lab.issue_bundle();
  EXPECT_EQ(bundle["nbd_tls"], "x509");
  EXPECT_TRUE(bundle["nbd_psk_key"].is_null());
  EXPECT_EQ(bundle["nbd_ca_cert"], mk::test::read_file(lab.nbd_ca_cert_file()));
  auto vma = lab.make_vma("site-a", true, /*nbd_forward=*/true);
  EXPECT_EQ(vma->paired.nbd_tls, protocol::NbdTls::X509);
  EXPECT_FALSE(std::filesystem::exists(vma->paired.psk_file()));
  EXPECT_EQ(mk::test::read_file(vma->paired.nbd_certificates_dir() + "/ca-cert.pem"),
            mk::test::read_file(lab.nbd_ca_cert_file()));
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up) << vma->tunnel->state().error.value_or("");

  mk::test::TempDir dir("mk-nbd-x509");
  const uint64_t size = 8ull << 20;
  std::string target = dir.file("target.img"), source = dir.file("source.img");
  mk::test::create_sparse_file(target, size);
  mk::test::create_sparse_file(source, size);
  mk::test::write_random_at(source, 1 << 20, 2 << 20, 4);
  std::string exp = "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001-disk0";
  ASSERT_EQ(lab.add_vm("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001", vma->paired.vma_id, size), 201);  // served to its VMA only
  lab.oma().export_server().publish(exp, target);
  mk::test::NbdkitServer src({.plugin = "file", .args = {"file=" + source}, .read_only = true});
  // "localhost": the name in the OMA's test certificate; the forward listens there.
  auto r = mk::test::run_migratekit({"copy", src.uri(),
                                     fmt::format("nbds://localhost:{}/{}", *vma->tunnel->config().nbd_local_port, exp),
                                     "--target-tls-certificates", vma->paired.nbd_certificates_dir()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(mk::test::files_identical(source, target));
  // Another CA does not verify the OMA's certificate: the copy is refused.
  std::filesystem::create_directories(dir.file("other-pki"));
  auto other = mk::test::make_x509_pki(dir.file("other-pki"));
  std::filesystem::create_directories(dir.file("other-ca"));
  std::filesystem::copy_file(other.client + "/ca-cert.pem", dir.file("other-ca/ca-cert.pem"));
  auto bad = mk::test::run_migratekit({"copy", src.uri(),
                                       fmt::format("nbds://localhost:{}/{}", *vma->tunnel->config().nbd_local_port, exp),
                                       "--target-tls-certificates", dir.file("other-ca")});
  EXPECT_NE(bad.exit_code, 0) << bad.out;
}

TEST(Tunnel, AJobOfAVmaOwnedVmRunsThroughThatVmasTunnel) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", true, false, /*start_tunnel=*/false);
  // The VMA's API: the OMA tests' strict fake, copying with the PSK the bundle carried.
  mk::oma::test::FakeVma fake(vma->paired.psk_file());
  fake.require_signatures(mk::vma::read_api_token(vma->state_dir));  // as the VMA: signed calls only
  int fake_port = std::stoi(fake.url().substr(fake.url().rfind(':') + 1));
  auto tc = mk::vma::tunnel_config(vma->paired, fake_port);
  fast_backoff(tc);
  vma->tunnel = std::make_unique<mk::vma::TunnelSupervisor>(tc);
  vma->tunnel->start();
  ASSERT_EQ(wait_state(*vma->tunnel, Up).state, Up) << vma->tunnel->state().error.value_or("");

  mk::test::TempDir dir("mk-job-ssh");
  const int64_t size = 4 << 20;
  std::string image = dir.file("src.img");
  mk::test::create_sparse_file(image, size);
  mk::test::write_random_at(image, 1 << 20, 1 << 20, 7);
  mk::test::NbdkitServer src({.args = {"file=" + image}});
  fake.set_source("2000", src.uri());
  std::string vm = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001";
  json body = {{"vm_id", vm}, {"name", "web01"}, {"vcenter", "vc-site-a"}, {"datacenter", "dc"}, {"cpus", 1},
               {"memory_mb", 512}, {"vma_id", vma->paired.vma_id},
               {"disks", json::array({{{"key", "2000"}, {"unit", 0}, {"capacity_bytes", size}}})}};
  ASSERT_EQ(http("POST", lab.api_port(), "/api/v1/vms", lab.admin(), body.dump()).status, 201);
  Reply job = http("POST", lab.api_port(), "/api/v1/jobs", lab.admin(), json{{"vm_id", vm}, {"kind", "full"}}.dump());
  ASSERT_EQ(job.status, 201) << job.raw;
  json j;
  ASSERT_TRUE(eventually([&] {
    j = http("GET", lab.api_port(), "/api/v1/jobs/" + job.body["job_id"].get<std::string>(), lab.admin()).body;
    return j["status"] == "completed" || j["status"] == "failed";
  }, std::chrono::seconds(120)));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_TRUE(fake.violations().empty());
  ASSERT_EQ(fake.replicate_requests().size(), 1u);
  EXPECT_TRUE(mk::test::files_identical(image, lab.oma().repos().storage.find_volume(vm, "2000")->device_path));
  bool through_tunnel = false;
  for (const auto& s : j["steps"])
    if (s["message"].dump().find(fmt::format("127.0.0.1:{}", vma->paired.tunnel_port)) != std::string::npos)
      through_tunnel = true;
  EXPECT_TRUE(through_tunnel) << j["steps"].dump(2);
}

}  // namespace
}  // namespace mk::tunnel_test
