// The kept export server (NbdkitExportServer with keep_running) against real nbdkit
// processes: the record is private and exact, stop() leaves the server running and the
// next start adopts it (same PID); a recorded PID that runs something else is never
// adopted nor signalled; a dead recorded server is replaced; the supervisor restarts a
// kept server that dies; stop_kept_export_server() ends it by PID.
#include <gtest/gtest.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "common/subprocess.h"
#include "oma/exports/nbdkit_server.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

bool alive(pid_t pid) {
  // A killed detached server may stay a zombie until its new parent reaps it.
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  in >> pid_s >> comm >> state;
  return in && state != "Z";
}

bool wait_gone(pid_t pid) {
  for (int i = 0; i < 1000 && alive(pid); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return !alive(pid);
}

// `sleep 600`, once it runs (not between fork and exec, when its cmdline is not yet its own).
Subprocess start_sleep() {
  Subprocess p = Subprocess::spawn({"sleep", "600"});
  std::string want("sleep\0" "600\0", 10);
  for (int i = 0; i < 1000; ++i) {
    std::ifstream in("/proc/" + std::to_string(p.pid()) + "/cmdline", std::ios::binary);
    std::string got((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (got == want) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return p;
}

struct KeptServerTest : ::testing::Test {
  mk::test::TempDir dir{"mk-kept-nbdkit"};
  std::string psk = mk::test::make_psk_file(dir.file("psk.keys"), "oma");
  std::string record = dir.file("export-server.json");

  ExportServerConfig config() {
    ExportServerConfig c;
    c.exports_dir = dir.file("exports");
    c.listen_address = "127.0.0.1";
    c.port = 0;
    c.tls.psk_file = psk;
    c.log_path = dir.file("nbdkit.log");
    c.keep_running = true;
    c.record_path = record;
    return c;
  }

  void TearDown() override {
    // Whatever a test left running is ended by its recorded PID.
    if (std::filesystem::exists(record)) stop_kept_export_server(record);
  }
};

TEST_F(KeptServerTest, RecordIsPrivateAndRoundTrips) {
  write_kept_server_record(record, {4242, 10809, {"nbdkit", "-f", "dir=/x y"}});
  struct stat st {};
  ASSERT_EQ(::stat(record.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto r = read_kept_server_record(record);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->pid, 4242);
  EXPECT_EQ(r->port, 10809);
  EXPECT_EQ(r->argv, (std::vector<std::string>{"nbdkit", "-f", "dir=/x y"}));
  std::filesystem::remove(record);
  EXPECT_FALSE(read_kept_server_record(record).has_value());
  mk::test::write_at(record, 0, "{not json");
  EXPECT_THROW(read_kept_server_record(record), Error);
  std::filesystem::remove(record);
}

TEST_F(KeptServerTest, StopLeavesItRunningAndTheNextStartAdoptsIt) {
  pid_t pid = 0;
  int port = 0;
  {
    NbdkitExportServer first(config());
    first.start();
    EXPECT_FALSE(first.adopted());
    pid = first.server_pid();
    port = first.port();
    auto r = read_kept_server_record(record);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->pid, pid);
    EXPECT_EQ(r->port, port);
    EXPECT_EQ(adoption_refusal(*r, r->argv, "127.0.0.1"), "");
    first.stop();
  }
  ASSERT_TRUE(alive(pid)) << "stop() must leave a kept server running";
  NbdkitExportServer second(config());
  second.start();
  EXPECT_TRUE(second.adopted());
  EXPECT_EQ(second.server_pid(), pid);
  EXPECT_EQ(second.port(), port) << "port 0 adopts the port chosen before";
  EXPECT_NE(second.endpoint("migration-vm-x-disk0").uri.find(":" + std::to_string(port) + "/"), std::string::npos);
  second.stop();
  EXPECT_EQ(stop_kept_export_server(record), "stopped the export server (pid " + std::to_string(pid) + ")");
  EXPECT_TRUE(wait_gone(pid));
  EXPECT_FALSE(std::filesystem::exists(record));
}

TEST_F(KeptServerTest, ARecordedPidRunningSomethingElseIsNeitherAdoptedNorSignalled) {
  pid_t old_pid = 0;
  int port = 0;
  std::vector<std::string> argv;
  {
    NbdkitExportServer first(config());
    first.start();
    old_pid = first.server_pid();
    port = first.port();
    argv = read_kept_server_record(record)->argv;
    first.stop();
  }
  // The old server is gone and its PID now names another program (as after a reboot).
  ::kill(old_pid, SIGKILL);
  ASSERT_TRUE(wait_gone(old_pid));
  Subprocess other = start_sleep();
  write_kept_server_record(record, {other.pid(), port, argv});
  std::string why = adoption_refusal({other.pid(), port, argv}, argv, "127.0.0.1");
  EXPECT_NE(why.find("runs 'sleep 600 '"), std::string::npos) << why;

  NbdkitExportServer next(config());
  next.start();
  EXPECT_FALSE(next.adopted());
  EXPECT_NE(next.server_pid(), other.pid());
  EXPECT_TRUE(other.running()) << "the unrelated process must be left alone";
  EXPECT_EQ(read_kept_server_record(record)->pid, next.server_pid());
  next.stop();
  // Stopping by the record ends the new server, not the other process.
  EXPECT_NE(stop_kept_export_server(record).find("stopped"), std::string::npos);
  EXPECT_TRUE(other.running());
  other.stop();
}

TEST_F(KeptServerTest, ADeadRecordedServerIsReplaced) {
  pid_t old_pid = 0;
  {
    NbdkitExportServer first(config());
    first.start();
    old_pid = first.server_pid();
    first.stop();
  }
  ::kill(old_pid, SIGKILL);
  ASSERT_TRUE(wait_gone(old_pid));
  auto r = read_kept_server_record(record);
  EXPECT_NE(adoption_refusal(*r, r->argv, "127.0.0.1").find("not running"), std::string::npos);
  NbdkitExportServer next(config());
  next.start();
  EXPECT_FALSE(next.adopted());
  EXPECT_NE(next.server_pid(), old_pid);
  EXPECT_TRUE(alive(next.server_pid()));
  EXPECT_EQ(read_kept_server_record(record)->pid, next.server_pid());
  next.stop();
}

TEST_F(KeptServerTest, AServerThatIsNotTheOneListeningOnTheRecordedPortIsNotAdopted) {
  NbdkitExportServer s(config());
  s.start();
  auto r = *read_kept_server_record(record);
  // Another process listens on another port; a record naming that port with the right
  // PID and command line must not be adopted.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  KeptServerRecord other_port = r;
  other_port.port = ntohs(a.sin_port);
  std::string why = adoption_refusal(other_port, r.argv, "127.0.0.1");
  EXPECT_NE(why.find("is not what accepts connections"), std::string::npos) << why;
  ::close(fd);
  EXPECT_EQ(adoption_refusal(r, r.argv, "127.0.0.1"), "");
  s.stop();
}

TEST_F(KeptServerTest, TheSupervisorRestartsAKeptServerThatDies) {
  NbdkitExportServer s(config());
  s.start();
  pid_t first = s.server_pid();
  ::kill(first, SIGKILL);
  for (int i = 0; i < 3000 && s.restarts() == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_EQ(s.restarts(), 1);
  EXPECT_NE(s.server_pid(), first);
  EXPECT_EQ(read_kept_server_record(record)->pid, s.server_pid());
  auto r = read_kept_server_record(record);
  EXPECT_EQ(adoption_refusal(*r, r->argv, "127.0.0.1"), "") << "the restarted server answers on the same port";
  s.stop();
}

TEST_F(KeptServerTest, StoppingByARecordWhosePidRunsSomethingElseLeavesItAlone) {
  Subprocess other = start_sleep();
  write_kept_server_record(record, {other.pid(), 1, {"nbdkit", "-f"}});
  EXPECT_NE(stop_kept_export_server(record).find("left alone"), std::string::npos);
  EXPECT_TRUE(other.running());
  EXPECT_FALSE(std::filesystem::exists(record));
  other.stop();
}

}  // namespace
}  // namespace mk::oma
