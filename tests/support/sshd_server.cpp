#include "support/sshd_server.h"

#include <fmt/format.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "support/files.h"
#include "support/net.h"

namespace mk::test {

std::vector<pid_t> child_pids(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat;
    if (!std::getline(in, stat)) continue;
    // "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent)
      out.push_back(std::stoi(name));
  }
  return out;
}

SshdServer::SshdServer(SshdOptions options) : options_(std::move(options)) {
  if (options_.authorized_keys_file.empty()) throw Error("SshdServer: authorized_keys_file is required");
  // sshd refuses to start without its privilege separation directory.
  ::mkdir("/run/sshd", 0755);
  std::string out;
  std::string key = dir_.file("host_ed25519_key");
  if (run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "oma-test-host", "-f", key}, out) != 0)
    throw Error("ssh-keygen could not make the test sshd's host key (is openssh-client installed?)");
  log_ = dir_.file("sshd.log");
  config_ = dir_.file("sshd_config");
  for (int attempt = 1;; ++attempt) {
    try {
      start_once(free_tcp_port());
      return;
    } catch (const Error&) {
      if (log().find("in use") == std::string::npos || attempt == 5) throw;
    }
  }
}

SshdServer::~SshdServer() { stop(); }

std::string SshdServer::host_public_key() const {
  std::string k = read_file(host_public_key_file());
  while (!k.empty() && (k.back() == '\n' || k.back() == '\r')) k.pop_back();
  return k;
}

std::string SshdServer::log() const {
  try {
    return read_file(log_);
  } catch (const Error&) {
    return "";
  }
}

std::vector<pid_t> SshdServer::session_pids() const {
  return process_.pid() > 0 ? child_pids(process_.pid()) : std::vector<pid_t>{};
}

void SshdServer::start_once(int port) {
  port_ = port;
  std::string cfg = fmt::format(
      "Port {}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nUsePAM no\n"
      "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
      "StrictModes no\nLogLevel VERBOSE\nAllowTcpForwarding yes\nGatewayPorts no\nX11Forwarding no\n"
      "PrintMotd no\nClientAliveInterval 5\nClientAliveCountMax 3\n",
      port, dir_.file("host_ed25519_key"), options_.authorized_keys_file, dir_.file("sshd.pid"));
  for (const auto& l : options_.extra) cfg += l + "\n";
  std::ofstream(config_) << cfg;
  mk::SpawnOptions spawn;
  spawn.stdout_path = log_;
  spawn.stderr_path = log_;
  process_ = mk::Subprocess::spawn({"/usr/sbin/sshd", "-D", "-e", "-f", config_}, spawn);
  ServerWatch watch{fmt::format("sshd -f {}", config_), log_, &process_};
  try {
    wait_for_tcp_port(port, watch);
  } catch (...) {
    process_.stop();
    throw;
  }
}

void SshdServer::stop() {
  // Sessions outlive the listener in OpenSSH: end them too (they are our descendants),
  // first, so that the listener still reaps them (nothing else would).
  for (pid_t p : session_pids()) {
    ::kill(p, SIGTERM);
    ::kill(p, SIGCONT);  // a test may have stopped it (a hung OMA)
  }
  for (int i = 0; i < 100 && !session_pids().empty(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  // A client may have connected again meanwhile: its session outlives the listener too.
  std::vector<pid_t> late = session_pids();
  process_.stop();
  for (pid_t p : late) {
    ::kill(p, SIGTERM);
    ::kill(p, SIGCONT);
  }
}

void SshdServer::restart() {
  stop();
  start_once(port_);
}

}  // namespace mk::test
