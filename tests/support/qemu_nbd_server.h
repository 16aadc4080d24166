// QemuNbdServer: a real qemu-nbd process serving one image (qcow2 or raw) on a Unix
// socket in its own temporary directory, optionally exposing persistent dirty bitmaps
// as qemu:dirty-bitmap:NAME meta contexts (a CBT source without VMware).
//
// It runs persistent (-t) and shared (-e) so that several connections in turn (plan,
// copy, verify) and the readiness probe are all accepted. Started as an mk::Subprocess
// and stopped by PID by stop() or the destructor. The constructor returns once the
// socket accepts connections and throws mk::Error with the command and its log
// otherwise. Owns the process, its socket directory and its log. Not thread-safe.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::test {

struct QemuNbdOptions {
  std::string image;                 // path of the image file
  std::string format = "qcow2";      // -f
  bool read_only = true;             // -r
  std::vector<std::string> bitmaps;  // -B NAME for each
  std::vector<std::string> extra;    // more qemu-nbd options
};

class QemuNbdServer {
 public:
  explicit QemuNbdServer(QemuNbdOptions options);
  ~QemuNbdServer();
  QemuNbdServer(const QemuNbdServer&) = delete;
  QemuNbdServer& operator=(const QemuNbdServer&) = delete;

  std::string uri() const { return "nbd+unix:///?socket=" + socket_; }
  pid_t pid() const { return process_.pid(); }
  const std::string& socket_path() const { return socket_; }
  const std::string& log_path() const { return log_; }
  void stop() { process_.stop(); }

 private:
  TempDir dir_{"mk-qemu-nbd"};
  std::string socket_, log_;
  mk::Subprocess process_;
};

}  // namespace mk::test
