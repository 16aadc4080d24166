// NbdServerExportServer: the stock nbd-server as export backend, for sites that
// standardise on it (the seed design's way): one daemon, its configuration in
// EXPORTS_DIR/nbd-server.conf including EXPORTS_DIR/conf.d, one file per export; a new
// export is added by writing its file (atomically) and sending SIGHUP to the one daemon
// PID (from its pidfile), after which publish() waits until the export answers.
//
// Known limit, reproduced with nbd-server 3.24 on Debian 12: after a few exports were
// added by SIGHUP (about 4 with includedir=, 7 when appended to the main file), the
// daemon stops answering new connections (exports present at its start are fine). publish() then fails loudly after its wait
// instead of reporting success; restarting the daemon (between copies) recovers. This
// is one more reason nbdkit is the default backend.
//
// nbd-server only appends exports on SIGHUP: an export cannot be repointed without a
// restart, so publish() refuses to change an existing export's target (the nbdkit
// backend has no such limit). nbd-server speaks TLS with X.509 only, so a certificates
// directory is required (ca-cert.pem, server-cert.pem, server-key.pem; the OMA's own
// verification connects with client-cert.pem and client-key.pem from the same place).
// The daemon outlives the OMA; start() adopts a running one from the pidfile. A
// supervisor thread restarts it if it dies. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

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
  mk::engine::Endpoint endpoint(const std::string& export_name) const override;
  pid_t server_pid() const override { return pid_.load(); }
  int restarts() const override { return restarts_.load(); }
  int port() const override { return config_.port; }
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
