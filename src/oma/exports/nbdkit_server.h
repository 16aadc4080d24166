// NbdkitExportServer: one supervised nbdkit process serving every export of the OMA.
//
//   nbdkit -f -i ADDR -p PORT --tls=require --tls-psk=FILE file dir=EXPORTS_DIR
//
// In dir= mode the file plugin serves each regular file or block device in the
// directory (following symlinks) under its own name, looked up when a client connects.
// So an export is created by renaming a fresh symlink into place (atomic: a client sees
// the old target or the new one, never a missing or half-made export), and nbdkit is
// never restarted or signalled for it. A supervisor thread restarts nbdkit if it dies;
// the exports survive because they are files.
//
// Owns the nbdkit process and the supervisor thread. Thread-safe.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

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
  mk::engine::Endpoint endpoint(const std::string& export_name) const override;
  pid_t server_pid() const override { return pid_.load(); }
  int restarts() const override { return restarts_.load(); }
  int port() const override { return config_.port; }

 private:
  std::vector<std::string> argv() const;
  void launch();  // requires mu_
  void supervise();

  ExportServerConfig config_;  // port fixed by start()
  mutable std::mutex mu_;  // guards process_, stopping_
  std::condition_variable cv_;
  Subprocess process_;
  bool stopping_ = false;
  std::thread supervisor_;
  std::atomic<pid_t> pid_{-1};
  std::atomic<int> restarts_{0};
};

// Waits until 127.0.0.1 (or `address`) accepts TCP connections on `port`, or `process`
// exits (throws with `log_path`'s tail), or the timeout passes (throws).
void wait_for_listen(const std::string& address, int port, Subprocess& process, const std::string& what,
                     const std::string& log_path, std::chrono::milliseconds timeout);

// The address a local client uses to reach a server listening on `listen_address`.
std::string client_address(const std::string& listen_address);

}  // namespace mk::oma
