#include "support/qemu_nbd_server.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "support/net.h"

namespace mk::test {

QemuNbdServer::QemuNbdServer(QemuNbdOptions o) {
  socket_ = dir_.file("sock");
  log_ = dir_.file("qemu-nbd.log");
  std::vector<std::string> argv{"qemu-nbd", "-t", "-e", "16", "-k", socket_, "-f", o.format};
  if (o.read_only) argv.push_back("-r");
  for (const auto& b : o.bitmaps) argv.insert(argv.end(), {"-B", b});
  argv.insert(argv.end(), o.extra.begin(), o.extra.end());
  argv.push_back(o.image);
  mk::SpawnOptions spawn;
  spawn.stdout_path = log_;
  spawn.stderr_path = log_;
  process_ = mk::Subprocess::spawn(argv, spawn);
  try {
    wait_for_unix_socket(socket_, {fmt::format("qemu-nbd ({})", fmt::join(argv, " ")), log_, &process_});
  } catch (...) {
    process_.stop();
    throw;
  }
}

QemuNbdServer::~QemuNbdServer() { stop(); }

}  // namespace mk::test
