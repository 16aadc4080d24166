#include "support/nbdkit_server.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <filesystem>

#include "common/error.h"
#include "support/files.h"
#include "support/net.h"

namespace mk::test {

NbdkitServer::NbdkitServer(NbdkitOptions options) : options_(std::move(options)) {
  log_ = dir_.file("nbdkit.log");
  if (!options_.tcp) {
    socket_ = dir_.file("sock");
    start_once(0);
    return;
  }
  // Another process may take the free port before nbdkit binds it: try a few.
  for (int attempt = 1;; ++attempt) {
    try {
      start_once(free_tcp_port());
      return;
    } catch (const Error&) {
      bool port_taken = log().find("in use") != std::string::npos;
      if (!port_taken || attempt == 5) throw;
    }
  }
}

NbdkitServer::~NbdkitServer() { stop(); }

std::vector<std::string> NbdkitServer::build_argv(int port) const {
  std::vector<std::string> argv{"nbdkit", "-f"};
  if (options_.tcp) {
    argv.insert(argv.end(), {"-i", "127.0.0.1", "-p", std::to_string(port)});
  } else {
    argv.insert(argv.end(), {"-U", socket_});
  }
  for (const auto& f : options_.filters) argv.push_back("--filter=" + f);
  if (!options_.tls_psk_file.empty()) {
    argv.push_back("--tls=require");
    argv.push_back("--tls-psk=" + options_.tls_psk_file);
  } else if (!options_.tls_certificates_dir.empty()) {
    argv.push_back("--tls=require");
    argv.push_back("--tls-certificates=" + options_.tls_certificates_dir);
    if (options_.tls_verify_peer) argv.push_back("--tls-verify-peer");
  }
  if (options_.read_only) argv.push_back("-r");
  if (options_.verbose) argv.push_back("-v");
  argv.insert(argv.end(), options_.extra.begin(), options_.extra.end());
  argv.push_back(options_.plugin);
  argv.insert(argv.end(), options_.args.begin(), options_.args.end());
  return argv;
}

void NbdkitServer::start_once(int port) {
  port_ = port;
  argv_ = build_argv(port);
  mk::SpawnOptions spawn;
  spawn.stdout_path = log_;
  spawn.stderr_path = log_;
  process_ = mk::Subprocess::spawn(argv_, spawn);
  ServerWatch watch{fmt::format("nbdkit ({})", fmt::join(argv_, " ")), log_, &process_};
  try {
    if (options_.tcp) {
      wait_for_tcp_port(port, watch);
    } else {
      wait_for_unix_socket(socket_, watch);
    }
  } catch (...) {
    process_.stop();
    throw;
  }
}

std::string NbdkitServer::uri() const {
  bool tls = !options_.tls_psk_file.empty() || !options_.tls_certificates_dir.empty();
  if (options_.tcp && !options_.tls_certificates_dir.empty()) return fmt::format("nbds://localhost:{}/", port_);
  if (options_.tcp) return fmt::format("{}://127.0.0.1:{}/", tls ? "nbds" : "nbd", port_);
  return fmt::format("{}+unix:///?socket={}", tls ? "nbds" : "nbd", socket_);
}

std::string NbdkitServer::log() const {
  try {
    return read_file(log_);
  } catch (const Error&) {
    return "";
  }
}

void NbdkitServer::stop() { process_.stop(); }

void NbdkitServer::restart() {
  stop();
  // A killed server leaves its socket behind; it is ours (in our directory), remove it.
  if (!socket_.empty()) std::filesystem::remove(socket_);
  start_once(port_);
}

}  // namespace mk::test
