// OmaBinary: the `oma` binary of this build run by an end-to-end test, beside the real
// `vma`. Its API listens on a free loopback port (read back from DATA/api.port), NBD on
// `nbd_port` (0: a free one; a fixed one lets a restarted OMA serve the port the VMA's
// job names), no GUI, the VMA polled every 100 ms. Without keep_export_server its export
// servers are its children and die with it; with it they outlive it (the test ends them
// by their record). The destructor stops it by PID, first letting a process held with
// SIGSTOP go on. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>

#include "common/subprocess.h"

namespace mk::vma::test {

struct OmaBinaryOptions {
  int nbd_port = 0;
  bool keep_export_server = false;
  int vma_timeout_s = 60;
};

class OmaBinary {
 public:
  OmaBinary(std::string data_dir, std::string vma_url, std::string token_file, OmaBinaryOptions options = {});
  ~OmaBinary();
  OmaBinary(const OmaBinary&) = delete;
  OmaBinary& operator=(const OmaBinary&) = delete;

  // Starts it (again, on the same data directory) logging to `log`; returns once its
  // API port is known. Throws naming the log's tail when it exits or takes over 60 s.
  void start(const std::string& log);
  void kill9();
  int terminate();  // SIGTERM; returns its exit status
  void signal(int sig);
  int port() const { return port_; }
  const std::string& log() const { return log_; }

 private:
  std::string data_, vma_url_, token_file_, log_;
  OmaBinaryOptions options_;
  Subprocess process_;
  int port_ = 0;
};

// Whether `pid` runs: it exists and is not a zombie (a killed detached server may stay
// one until its new parent reaps it).
bool process_alive(pid_t pid);

}  // namespace mk::vma::test
