// VmaProcess: the real `vma run` binary of this build as a child process of a test,
// against a VcsimLab, with its state directory, token and PSK files chosen by the test
// and its API on a free loopback port (port 0, read back from STATE/api.port).
//
// kill9() ends it as a crash would (SIGKILL; its nbdkit readers exit with it);
// restart() starts it again on the same port and state directory, as an operator's
// service manager would. The destructor stops it by PID (SIGTERM, then SIGKILL). Not
// thread-safe; one owner.
#pragma once

#include <map>
#include <string>

#include "common/subprocess.h"
#include "lab/vcsim/vcsim_lab.h"

namespace mk::vma::test {

struct VmaProcessOptions {
  std::string state_dir;
  std::string token_file;
  std::string psk_file;          // "" = none (an X.509 VMA)
  std::string certificates_dir;  // --nbd-certificates ("" = the default)
  int max_disks_per_vm = 4;
  int max_vms = 4;
  int nbd_connections = 0;  // --nbd-connections; 0: not given (the VMA's default for its mode)
  std::string read_rate;  // --read-rate-limit, "" for none
  bool nbd_over_ssh = false;  // --nbd-over-ssh (a paired VMA: STATE/pairing.json)
};

class VmaProcess {
 public:
  VmaProcess(const mk::test::VcsimLab& lab, VmaProcessOptions options);
  ~VmaProcess();
  VmaProcess(const VmaProcess&) = delete;
  VmaProcess& operator=(const VmaProcess&) = delete;

  int port() const { return port_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  const std::string& log_path() const { return log_; }
  pid_t pid() const { return process_.pid(); }

  void kill9();
  void restart();
  void stop();  // SIGTERM and wait

 private:
  void start(int port);

  const mk::test::VcsimLab& lab_;
  VmaProcessOptions options_;
  std::string log_;
  mk::Subprocess process_;
  int port_ = 0;
};

}  // namespace mk::vma::test
