#include "vma_process.h"

#include <fmt/format.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "support/net.h"

namespace mk::vma::test {

VmaProcess::VmaProcess(const mk::test::VcsimLab& lab, VmaProcessOptions options)
    : lab_(lab), options_(std::move(options)), log_(options_.state_dir + ".log") {
  start(0);
}

VmaProcess::~VmaProcess() { stop(); }

void VmaProcess::start(int port) {
  std::string port_file = options_.state_dir + "/api.port";
  std::filesystem::remove(port_file);
  std::vector<std::string> argv = {
      VMA_BIN, "run", "--state-dir", options_.state_dir, "--vcenter", lab_.url(), "--vcenter-user", lab_.user(),
      "--vcenter-password-file", lab_.password_file(), "--vcenter-thumbprint", lab_.thumbprint(),
      "--listen", fmt::format("127.0.0.1:{}", port), "--token-file", options_.token_file, "--max-disks-per-vm", std::to_string(options_.max_disks_per_vm), "--max-vms",
      std::to_string(options_.max_vms)};
  if (options_.nbd_connections > 0)
    argv.insert(argv.end(), {"--nbd-connections", std::to_string(options_.nbd_connections)});
  for (int i = 0; i < lab_.inventory().datastores; ++i) {  // every datastore of the lab
    std::string name = fmt::format("LocalDS_{}", i);
    argv.insert(argv.end(), {"--lab-flat-datastore", name + "=" + lab_.datastore_dir(name)});
  }
  if (!options_.psk_file.empty()) argv.insert(argv.end(), {"--nbd-psk-file", options_.psk_file});
  if (!options_.certificates_dir.empty()) argv.insert(argv.end(), {"--nbd-certificates", options_.certificates_dir});
  if (!options_.read_rate.empty()) {
    argv.push_back("--read-rate-limit");
    argv.push_back(options_.read_rate);
  }
  if (options_.nbd_over_ssh) argv.push_back("--nbd-over-ssh");
  SpawnOptions so;
  so.stdout_path = so.stderr_path = log_;
  process_ = Subprocess::spawn(argv, so);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(port_file)) {
    if (!process_.running()) {
      throw Error(fmt::format("vma exited (status {}) before listening; its log:\n{}",
                              process_.exit_status().value_or(-1), mk::test::log_tail(log_)));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      throw Error("vma did not listen within 60 s; its log:\n" + mk::test::log_tail(log_));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::ifstream in(port_file);
  in >> port_;
  if (port_ <= 0) throw Error("vma wrote no port to " + port_file);
  mk::test::wait_for_tcp_port(port_, {"vma", log_, &process_});
}

void VmaProcess::kill9() {
  process_.signal(SIGKILL);
  process_.wait();
}

void VmaProcess::restart() {
  // The OMA knows the VMA by its port: come back on the same one (retry while the
  // kernel still holds it).
  for (int attempt = 0;; ++attempt) {
    try {
      start(port_);
      return;
    } catch (const std::exception&) {
      if (attempt >= 20) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
}

void VmaProcess::stop() { process_.stop(std::chrono::seconds(30)); }

}  // namespace mk::vma::test
