// SshdServer: a real OpenSSH server (/usr/sbin/sshd) for one test, on 127.0.0.1 at a
// free port, the OMA's side of the VMA control tunnel.
//
// It writes its own sshd_config in a private directory: its own ed25519 host key,
// AuthorizedKeysFile = the file the test (the OMA) manages, PidFile, no PAM, no
// passwords, root by key only, ListenAddress 127.0.0.1, verbose log. It runs in the
// foreground (sshd -D -e) as an mk::Subprocess, so it is stopped by PID. StrictModes is
// off because test directories live under /tmp (world-writable); a real OMA keeps the
// file in its 0700 data directory. restart() also ends the sessions the old server
// had (its child processes, found by parent PID), as an OMA reboot does.
//
// Owns the process, its directory and log. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::test {

struct SshdOptions {
  std::string authorized_keys_file;   // required: the OMA-managed file
  std::vector<std::string> extra;     // more sshd_config lines
};

class SshdServer {
 public:
  explicit SshdServer(SshdOptions options);
  ~SshdServer();
  SshdServer(const SshdServer&) = delete;
  SshdServer& operator=(const SshdServer&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return process_.pid(); }
  // The public host key line ("ssh-ed25519 AAAA... comment") and its file.
  std::string host_public_key() const;
  std::string host_public_key_file() const { return dir_.file("host_ed25519_key.pub"); }
  const std::string& log_path() const { return log_; }
  std::string log() const;
  // PIDs of the server's children: one per live SSH connection.
  std::vector<pid_t> session_pids() const;

  void stop();  // the listener and every session; safe twice
  void restart();

 private:
  void start_once(int port);

  SshdOptions options_;
  TempDir dir_{"mk-sshd"};
  std::string log_, config_;
  int port_ = 0;
  mk::Subprocess process_;
};

// Children of `parent` (from /proc/*/stat).
std::vector<pid_t> child_pids(pid_t parent);

}  // namespace mk::test
