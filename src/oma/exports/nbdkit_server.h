// NbdkitExportServer: one supervised nbdkit process serving a directory of exports.
//
// With the OMA's nbdkit backend (VmaIsolatedExports) there is one per approved VMA plus
// the OMA's own, each on a Unix socket (config.unix_socket: -U PATH instead of -i/-p),
// behind the NBD router: with PSK each does TLS with its PSK file; with X.509 they speak
// plain NBD (config.tls empty, allowed only on a Unix socket) and the router ends TLS.
// The router itself is supervised by this class too (config.router_sockets_dir: the
// process is migratekit-nbd-router instead of nbdkit, kept and adopted the same way).
// On a TCP port (tests, tools) it is a single server and TLS is required.
//
//   nbdkit -f -i ADDR -p PORT --tls=require --tls-psk=FILE
//          --filter=.../nbdkit-written-filter.so file dir=EXPORTS_DIR written-dir=WRITTEN_DIR
//   (X.509: --tls-certificates=DIR [--tls-verify-peer] instead of --tls-psk)
//
// The written filter (exports/written_filter) counts each export's durable written
// bytes in WRITTEN_DIR/EXPORT.written; written_bytes() reads that count. The
// constructor refuses to run without the filter: the OMA checks VMA reports with it.
//
// In dir= mode the file plugin serves each regular file or block device in the
// directory (following symlinks) under its own name, looked up when a client connects.
// So an export is created by renaming a fresh symlink into place (atomic: a client sees
// the old target or the new one, never a missing or half-made export), and nbdkit is
// never restarted or signalled for it. A supervisor thread restarts nbdkit if it dies;
// the exports survive because they are files.
//
// With keep_running, nbdkit is not the OMA's child: it is started in its own session
// (double fork, no parent-death signal), its PID and exact argv are recorded in
// config.record_path (0600, replaced atomically), and the next OMA start adopts it when
// that PID is alive, runs exactly the argv this configuration would run, and accepts
// connections on its port — so copies from the VMA into the exports go on while the OMA
// restarts. A kept server is supervised by polling a pidfd (kill(pid, 0) where pidfd_open
// is missing) and restarted if it dies; stop() leaves it running; stop_kept_export_server()
// ends it by its recorded PID.
//
// Cutting a writer off (cut_off) restarts nbdkit: in dir= mode the file plugin opens an
// export's file when a client connects and keeps it open, so removing the symlink stops
// new connections only; nbdkit 1.32 (Debian 12) cannot close one connection (there is
// no admin interface, and nbdkit_disconnect() arrived in 1.34), and no filter of 1.32
// drops connections of one export (error-file= fails every export's requests, exitwhen
// ends the server). So the export is unpublished first and a new nbdkit replaces the
// old one on the same port: the cut-off exports' connections are gone and cannot come
// back, every other export's clients lose their connection once and reconnect (the
// copy engine reconnects and redoes unflushed writes). It happens only when a VMA
// cannot be reached to stop a job, which is rare and already costs that VMA's copies.
//
// Owns the nbdkit process (only while it is its child) and the supervisor thread.
// Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "common/subprocess.h"
#include "oma/exports/export_backend.h"

namespace mk::oma {

class NbdkitExportServer : public ExportBackend {
 public:
  explicit NbdkitExportServer(ExportServerConfig config);
  ~NbdkitExportServer() override;

  std::string name() const override { return "nbdkit"; }
  void start() override;
  void stop() override;
  void publish(const std::string& export_name, const std::string& device_path) override;
  void unpublish(const std::string& export_name) override;
  void cut_off(const std::vector<std::string>& export_names) override;
  // Ends the server now, kept or not, and stops supervising it (its record is removed):
  // how a revoked VMA's server goes. Its clients' connections end with it.
  void terminate();
  Endpoint endpoint(const std::string& export_name) const override;
  pid_t server_pid() const override { return pid_.load(); }
  int restarts() const override { return restarts_.load(); }
  int port() const override { return config_.port; }
  // True when start() adopted a kept server left by an earlier OMA (keep_running).
  bool adopted() const { return adopted_.load(); }
  std::optional<uint64_t> written_bytes(const std::string& export_name) const override;

 private:
  // Stops the supervisor thread and closes the pidfd of a kept server (true if it had
  // one); the server itself keeps running.
  bool end_supervision();
  std::vector<std::string> argv() const;
  bool on_unix_socket() const { return !config_.unix_socket.empty(); }
  bool router() const { return !config_.router_sockets_dir.empty(); }
  void launch();  // requires mu_
  void relaunch();  // requires mu_: ends the running nbdkit (child or kept), launches a new one
  bool try_adopt();  // requires mu_
  bool server_alive();  // requires mu_
  void supervise();

  ExportServerConfig config_;  // port fixed by start()
  mutable std::mutex mu_;  // guards process_, stopping_
  std::condition_variable cv_;
  Subprocess process_;  // the child nbdkit (not keep_running)
  int pidfd_ = -1;      // the kept nbdkit (keep_running); -1 when pidfd_open is missing
  bool stopping_ = false;
  std::thread supervisor_;
  std::atomic<pid_t> pid_{-1};
  std::atomic<int> restarts_{0};
  std::atomic<bool> adopted_{false};
};

// The written-bytes filter beside the running binary: BIN/../lib/migratekit/
// nbdkit-written-filter.so (the build tree and the installed tree alike).
std::string default_written_filter_path();

// What an OMA recorded about the export server it keeps running.
struct KeptServerRecord {
  pid_t pid = -1;
  int port = 0;
  std::vector<std::string> argv;
};

// Where the OMA with data directory `data_dir` records its kept export server.
inline std::string kept_server_record_path(const std::string& data_dir) { return data_dir + "/export-server.json"; }

// Reads a record; nullopt when there is none. Throws mk::Error for an unreadable one.
std::optional<KeptServerRecord> read_kept_server_record(const std::string& path);
// A record's text: {"pid": >1, "port": 1..65535, "argv": [strings, at least one]}.
// Throws mk::Error saying what is wrong with anything else.
KeptServerRecord parse_kept_server_record(const std::string& text);
// Writes it with write_private_file (mode 0600, replaced atomically). Throws mk::Error.
void write_kept_server_record(const std::string& path, const KeptServerRecord& record);

// "" when `record` may be adopted: its PID is alive, /proc/PID/cmdline is exactly
// `expected_argv`, and `address`:port accepts connections. Otherwise why not.
std::string adoption_refusal(const KeptServerRecord& record, const std::vector<std::string>& expected_argv,
                             const std::string& address);

// Ends the kept server recorded at `record_path` (SIGTERM, then SIGKILL) by its PID,
// only if that PID still runs the recorded argv, and removes the record; then does the
// same for every record in kept_servers_dir(record_path) (the servers behind the NBD
// router). Returns what it did, for the operator. Throws mk::Error if a server does not
// exit.
std::string stop_kept_export_server(const std::string& record_path);
// The same for the one server recorded at `record_path`, with `grace` between SIGTERM
// and SIGKILL.
std::string stop_one_kept_server(const std::string& record_path,
                                 std::chrono::milliseconds grace = std::chrono::milliseconds(5000));
// Where the records of the kept servers behind the one recorded at `record_path` live:
// DATA/export-server.json -> DATA/export-server.d/.
std::string kept_servers_dir(const std::string& record_path);

// Waits until 127.0.0.1 (or `address`) accepts TCP connections on `port`. `ended` says
// how the server ended ("exited (status 1)") or nullopt while it runs: an end, like the
// timeout passing, throws with `log_path`'s tail.
void wait_for_listen(const std::string& address, int port, const std::function<std::optional<std::string>()>& ended,
                     const std::string& what, const std::string& log_path, std::chrono::milliseconds timeout);

// The address a local client uses to reach a server listening on `listen_address`.
std::string client_address(const std::string& listen_address);

}  // namespace mk::oma
