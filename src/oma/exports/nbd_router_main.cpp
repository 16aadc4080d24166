// migratekit-nbd-router: the OMA's NBD port in front of the per-VMA nbdkit servers
// (NbdRouter; see nbd_router.h). Started and kept by the OMA (VmaIsolatedExports), in
// its own session when the OMA keeps its export servers across restarts.
//
//   migratekit-nbd-router --listen ADDR --port PORT --sockets DIR [--tls-certificates DIR]
//
// Runs until SIGTERM or SIGINT. With PSK it holds no secret: the TLS handshake is
// between each client and its VMA's nbdkit. With --tls-certificates (X.509) it ends TLS
// itself with the OMA's server key and routes by the client certificate's CN.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "common/log.h"
#include "oma/exports/nbd_router.h"

int main(int argc, char** argv) {
  mk::oma::NbdRouterConfig c;
  int handshake_ms = static_cast<int>(c.handshake_timeout.count());
  CLI::App app{"migratekit-nbd-router: routes NBD+TLS connections to a VMA's nbdkit by TLS PSK identity"};
  app.add_option("--listen", c.listen_address, "IPv4 address to listen on")->required();
  app.add_option("--port", c.port, "TCP port to listen on")->required()->check(CLI::Range(1, 65535));
  app.add_option("--sockets", c.sockets_dir, "directory of IDENTITY.sock Unix sockets (one per VMA's nbdkit)")
      ->required();
  app.add_option("--tls-certificates", c.tls_certificates_dir,
                 "X.509: end TLS here with DIR/server-cert.pem, server-key.pem; trust DIR/client-ca.pem and "
                 "DIR/ca-crl.pem for clients; route by the client certificate's CN");
  app.add_option("--handshake-timeout-ms", handshake_ms, "time a client has to reach its server")
      ->check(CLI::Range(100, 600000));
  app.add_option("--max-handshakes", c.max_handshakes, "connections at most in the handshake")->check(CLI::Range(1, 100000));
  app.add_option("--max-connections", c.max_connections, "connections at most open")->check(CLI::Range(1, 1000000));
  CLI11_PARSE(app, argc, argv);
  c.handshake_timeout = std::chrono::milliseconds(handshake_ms);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);  // before any thread: they inherit the mask
  try {
    mk::oma::NbdRouter router(c);
    router.start();
    int sig = 0;
    sigwait(&set, &sig);
    mk::log::info("NBD router: signal {}: stopping ({} connections routed, {} refused)", sig, router.routed(),
                  router.refused());
    router.stop();
  } catch (const std::exception& e) {
    std::cerr << "migratekit-nbd-router: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
