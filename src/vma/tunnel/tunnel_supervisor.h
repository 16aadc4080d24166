// TunnelSupervisor: keeps the VMA's SSH control tunnel to the OMA up.
//
// It runs OpenSSH's client (`ssh -N`, never a shell) holding a reverse forward
// OMA 127.0.0.1:<remote_port> -> VMA 127.0.0.1:<local_api_port> (the OMA side's address
// is remote_address: another loopback address only where several OMA nodes share one
// machine), and optionally a local
// forward VMA 127.0.0.1:<nbd_local_port> -> OMA 127.0.0.1:<nbd_remote_port> so that NBD
// travels inside the SSH connection (sites that allow one port only). The OMA's host
// key is pinned (StrictHostKeyChecking=yes against a known_hosts file written at
// pairing, under a fixed HostKeyAlias), authentication is the VMA's key only
// (BatchMode, IdentitiesOnly, no agent), a forward that cannot be set up ends ssh
// (ExitOnForwardFailure), and keep-alives detect a dead peer. When ssh exits it is
// restarted after a backoff that doubles up to a maximum and starts over once the
// tunnel has been up.
//
// Up is what ssh itself reports: its debug log line saying every remote forward was
// accepted by the OMA ("forwarding_success: all expected forwarding replies
// received"). Down carries the reason ssh gave (host key mismatch, key not
// authorised, forward refused, connection refused) with a hint.
//
// No secret is on ssh's command line (only file paths). Owns its thread and the ssh
// process (stopped by PID). state() and the counters are thread-safe; start/stop from
// one thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vma/tunnel_state.h"

namespace mk::vma {

struct TunnelConfig {
  std::string ssh_host;                 // the OMA
  int ssh_port = 22;                    // 22 or 443
  std::string ssh_user = "migratekit";
  std::string identity_file;            // the VMA's private key (0600)
  std::string known_hosts_file;         // the pinned OMA host key (see host_key_alias)
  std::string host_key_alias = "migratekit-oma";
  int remote_port = 9081;               // OMA side of the reverse forward
  std::string remote_address = "127.0.0.1";  // where on the OMA it listens (a node's tunnel address)
  int local_api_port = 8081;            // the VMA API on 127.0.0.1
  std::optional<int> nbd_local_port;    // set: -L 127.0.0.1:<it>:127.0.0.1:<nbd_remote_port>
  int nbd_remote_port = 10809;
  int keepalive_interval_s = 15;        // ServerAliveInterval
  int keepalive_count = 3;              // ServerAliveCountMax
  int connect_timeout_s = 15;
  std::chrono::milliseconds backoff_initial{1000};
  std::chrono::milliseconds backoff_max{60000};
  std::string log_path;                 // ssh's own log (debug level), truncated per attempt
  size_t log_max_bytes = 1 << 20;       // truncated while up once larger than this
  std::string ssh_binary = "ssh";
};

// The ssh command line for `config` (exposed for tests and for operators' diagnosis).
std::vector<std::string> ssh_command(const TunnelConfig& config);

// Now in seconds since the Unix epoch, as TunnelStatus::since says it.
int64_t unix_now();

class TunnelSupervisor {
 public:
  explicit TunnelSupervisor(TunnelConfig config);
  ~TunnelSupervisor();
  TunnelSupervisor(const TunnelSupervisor&) = delete;
  TunnelSupervisor& operator=(const TunnelSupervisor&) = delete;

  void start();
  // Stops ssh (SIGTERM, then SIGKILL, by PID) and the thread. Safe to call twice.
  void stop();

  protocol::TunnelHealth state() const;
  // The running ssh's PID (-1 if none) and how many times ssh was started.
  pid_t ssh_pid() const { return pid_.load(); }
  int attempts() const { return attempts_.load(); }
  const TunnelConfig& config() const { return config_; }

 private:
  void run();
  // One ssh run: returns true if the tunnel was up at some point.
  bool run_once();
  void set_state(protocol::TunnelState state, std::optional<std::string> error);
  bool wait_or_stop(std::chrono::milliseconds d);

  TunnelConfig config_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  protocol::TunnelHealth state_;
  std::chrono::milliseconds backoff_;
  bool stopping_ = false;
  std::atomic<pid_t> pid_{-1};
  std::atomic<int> attempts_{0};
  std::thread thread_;
};

// The reason ssh gave in its log for exiting, with a hint for the operator (what to do
// next); "" if the log says nothing useful. Exposed for tests.
std::string explain_ssh_failure(const std::string& log_text);

}  // namespace mk::vma
