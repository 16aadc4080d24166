// NbdServerExportServer: the stock nbd-server as export backend, for sites that
// standardise on it (the seed design's way): one daemon, its configuration in
// EXPORTS_DIR/nbd-server.conf including EXPORTS_DIR/conf.d, one file per export; a new
// export is added by writing its file (atomically) and sending SIGHUP to the one daemon
// PID (from its pidfile), after which publish() waits until the export answers.
//
// Known limits, reproduced with nbd-server 3.24 on Debian 12: after a few exports were
// added by SIGHUP (sometimes the third, with TLS), the daemon stops answering new
// connections or dies of the SIGHUP (exports present at its start are fine). publish()
// sends SIGHUP again when an export does not appear, starts a new daemon when the old
// one died (connections already handed to forked children keep running), and otherwise
// fails loudly rather than report an export that does not answer. It never restarts a
// live daemon: that would kill the copies it serves. This is why nbdkit is the default.
//
// nbd-server cannot count the bytes written to an export (no filters, no statistics):
// written_bytes() is nullopt, so the OMA cannot check a VMA's report of a completed disk
// against the server (issue 13, finding 3). start() logs it, and every pass records it
// in its events; sites that need the check use the nbdkit backend.
//
// The daemon outlives the OMA; start() adopts a running one from the pidfile. A
// supervisor thread restarts it if it dies. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "oma/exports/export_backend.h"

namespace mk::oma {

class NbdServerExportServer : public ExportBackend {
 public:
  explicit NbdServerExportServer(ExportServerConfig config);
  ~NbdServerExportServer() override;

  std::string name() const override { return "nbd-server"; }
  void start() override;
  void stop() override;
  void publish(const std::string& export_name, const std::string& device_path) override;
  void unpublish(const std::string& export_name) override;
  // Not supported: throws (a job whose VMA cannot be reached then stays unresolved;
  // stop the VMA's copy by hand). The nbdkit backend can.
  void cut_off(const std::vector<std::string>& export_names) override;
  Endpoint endpoint(const std::string& export_name) const override;

  // Fencing on an OMA node of several (the sweep of nodes/node_failover.h; cut_off()
  // stays refused because it cannot keep new connections out). Whether the export's
  // configuration file is present (the daemon serves it, and loads it at its next start).
  bool publishes(const std::string& export_name) const;
  // The daemon's children that hold `device_path` open: each client connection is one
  // forked child of the daemon, which opens the export's file (found through /proc,
  // the device compared after resolving symlinks).
  std::vector<pid_t> connections_on(const std::string& device_path) const;
  // Ends those children (SIGKILL): every connection already open on the device is
  // closed and writes nothing more. Returns how many. What remains: the daemon keeps the
  // export in memory until its next start (nbd-server drops no export at run time), so
  // a new client could still connect while the device exists; with CloudStack volumes
  // the device goes when the volume is detached from this node's VM.
  int close_connections(const std::string& device_path);
  pid_t server_pid() const override { return pid_.load(); }
  int restarts() const override { return restarts_.load(); }
  int port() const override { return config_.port; }
  std::optional<uint64_t> written_bytes(const std::string&) const override { return std::nullopt; }
  int reloads() const { return reloads_.load(); }  // SIGHUPs sent

 private:
  void write_config();
  void launch();  // requires mu_
  pid_t running_daemon() const;
  void supervise();

  ExportServerConfig config_;
  std::string conf_, conf_d_, pidfile_;
  mutable std::mutex mu_;  // guards publishing and (re)starting
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread supervisor_;
  std::atomic<pid_t> pid_{-1};
  std::atomic<int> restarts_{0}, reloads_{0};
};

}  // namespace mk::oma
