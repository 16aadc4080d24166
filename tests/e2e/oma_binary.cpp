#include "oma_binary.h"

#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "common/error.h"
#include "support/net.h"

namespace mk::vma::test {

OmaBinary::OmaBinary(std::string data_dir, std::string vma_url, std::string token_file, OmaBinaryOptions options)
    : data_(std::move(data_dir)), vma_url_(std::move(vma_url)), token_file_(std::move(token_file)), options_(options) {}

OmaBinary::~OmaBinary() {
  if (process_.running()) {
    process_.signal(SIGCONT);  // a test that failed while it was held
    process_.stop();
  }
}

void OmaBinary::start(const std::string& log) {
  log_ = log;
  std::filesystem::remove(data_ + "/api.port");
  std::vector<std::string> argv = {OMA_BIN, "--data-dir", data_, "--api-listen", "127.0.0.1", "--api-port", "0",
                                   "--nbd-listen", "127.0.0.1", "--nbd-port", std::to_string(options_.nbd_port),
                                   "--gui-port", "-1", "--vma-url", vma_url_, "--vma-token-file", token_file_,
                                   "--poll-interval-ms", "100", "--vma-timeout", std::to_string(options_.vma_timeout_s),
                                   "--strict-api-replies"};
  if (options_.keep_export_server) argv.push_back("--keep-export-server");
  SpawnOptions o;
  o.stdout_path = o.stderr_path = log_;
  process_ = Subprocess::spawn(argv, o);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!std::filesystem::exists(data_ + "/api.port")) {
    if (!process_.running()) throw Error("oma exited at start:\n" + mk::test::log_tail(log_));
    if (std::chrono::steady_clock::now() > deadline) throw Error("oma did not start:\n" + mk::test::log_tail(log_));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(data_ + "/api.port");
  in >> port_;
  if (port_ <= 0) throw Error("oma did not write api.port:\n" + mk::test::log_tail(log_));
}

void OmaBinary::kill9() {
  process_.signal(SIGKILL);
  process_.wait();
}

int OmaBinary::terminate() {
  process_.signal(SIGTERM);
  return process_.wait();
}

void OmaBinary::signal(int sig) { process_.signal(sig); }

bool process_alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  in >> pid_s >> comm >> state;
  return in && state != "Z";
}

}  // namespace mk::vma::test
