// NbdkitServer: a real nbdkit process serving one export for a test, on a Unix socket
// in its own temporary directory or on 127.0.0.1 at a free port.
//
// The server runs in the foreground (nbdkit -f) as an mk::Subprocess, so it is stopped
// by PID (never by name) when stop() is called or the NbdkitServer is destroyed. The
// constructor returns once the server accepts connections, and throws mk::Error with
// the nbdkit command and its log otherwise. The NbdkitServer owns the process, the
// socket directory and the log file (nbdkit's stdout and stderr). Not thread-safe.
//
//   NbdkitServer src({.plugin = "file", .args = {"file=" + dir.file("disk.img")}});
//   run_migratekit({"copy", src.uri(), dst.uri()});
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::test {

struct NbdkitOptions {
  std::string plugin = "file";         // plugin name or path: "file", "memory", "null", ...
  std::vector<std::string> args;       // plugin (and filter) parameters: "file=/x", "delay-write=20ms"
  std::vector<std::string> filters;    // "delay", "error", ...: outermost first, as on nbdkit's command line
  bool tcp = false;                    // 127.0.0.1:<free port> instead of a Unix socket
  std::string tls_psk_file;            // non-empty: --tls=require --tls-psk=FILE (nbds:// URIs)
  std::string tls_certificates_dir;    // non-empty: --tls=require --tls-certificates=DIR
  bool tls_verify_peer = false;        // --tls-verify-peer: clients must show a certificate of the CA
  bool read_only = false;              // -r
  bool verbose = false;                // -v (debug messages in the log)
  std::vector<std::string> extra;      // more nbdkit options, placed before the plugin
};

class NbdkitServer {
 public:
  explicit NbdkitServer(NbdkitOptions options);
  ~NbdkitServer();
  NbdkitServer(const NbdkitServer&) = delete;
  NbdkitServer& operator=(const NbdkitServer&) = delete;

  // nbd+unix:///?socket=PATH, nbds+unix:///?socket=PATH, nbd://127.0.0.1:PORT/ or
  // nbds://127.0.0.1:PORT/ (the default export); with X.509 on TCP the host is
  // "localhost", the name in the test certificates (support/x509.h).
  std::string uri() const;
  pid_t pid() const { return process_.pid(); }
  bool running() { return process_.running(); }
  const std::string& socket_path() const { return socket_; }  // "" on TCP
  int port() const { return port_; }                          // 0 on a Unix socket
  const std::string& log_path() const { return log_; }
  std::string log() const;  // the whole log so far
  const std::vector<std::string>& command() const { return argv_; }

  // SIGTERM, then SIGKILL after a grace period, by PID. Safe to call twice.
  void stop();
  // Sends `sig` to the server (SIGKILL simulates a crash); reaped by stop().
  void signal(int sig) { process_.signal(sig); }
  // Stops the server if it runs and starts it again with the same command, socket or
  // port, so that clients holding the URI can reconnect (a server restart or crash).
  void restart();

 private:
  std::vector<std::string> build_argv(int port) const;
  void start_once(int port);

  NbdkitOptions options_;
  TempDir dir_{"mk-nbdkit"};
  std::string socket_, log_;
  int port_ = 0;
  std::vector<std::string> argv_;
  mk::Subprocess process_;
};

}  // namespace mk::test
