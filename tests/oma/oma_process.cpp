#include "oma_process.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include "common/error.h"
#include "support/net.h"

namespace mk::oma::test {

OmaProcess::OmaProcess(const std::string& data, const std::string& vma_url, const std::string& log,
                       const std::vector<std::string>& extra) {
  std::filesystem::remove(data + "/api.port");
  SpawnOptions o;
  o.stdout_path = log;
  o.stderr_path = log;
  std::vector<std::string> argv{OMA_BIN, "--data-dir", data, "--api-listen", "127.0.0.1", "--api-port", "0",
                                "--gui-listen", "127.0.0.1", "--gui-port", "0", "--nbd-listen", "127.0.0.1",
                                "--nbd-port", "0", "--vma-url", vma_url, "--poll-interval-ms", "50", "--vma-timeout",
                                "30", "--strict-api-replies"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  process = Subprocess::spawn(argv, o);
  for (int i = 0; i < 1500 && !std::filesystem::exists(data + "/api.port"); ++i) {
    if (!process.running()) throw Error("oma exited at start:\n" + mk::test::log_tail(log));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::ifstream in(data + "/api.port");
  in >> port;
  if (port <= 0) throw Error("oma did not write api.port:\n" + mk::test::log_tail(log));
}

}  // namespace mk::oma::test
