// NbdRouter: the front end on the OMA's one NBD port that hands each connection to the
// nbdkit of the VMA whose TLS PSK identity the client presents.
//
// nbdkit (1.32, and still 1.45) cannot tell PSK identities apart: a server whose PSK
// file holds every VMA's key lets every VMA open every export. So each VMA gets its own
// nbdkit with a PSK file holding only its key, serving only its VMs' exports, on a Unix
// socket SOCKETS_DIR/IDENTITY.sock (see VmaIsolatedExports), and this router sits on
// the port. For each connection it:
//
//  1. speaks the start of the NBD fixed-newstyle handshake itself: greeting, the client's
//     flags, options until NBD_OPT_STARTTLS (answered with ACK; any other option gets
//     NBD_REP_ERR_TLS_REQD, as nbdkit --tls=require does; NBD_OPT_ABORT ends it);
//  2. reads the TLS ClientHello without answering it (buffered, at most
//     kMaxClientHello bytes) and takes the PSK identity from its TLS 1.3 pre_shared_key
//     extension (GnuTLS, and so libnbd and nbdkit's clients, send it there); a hello
//     without one is refused;
//  3. connects to SOCKETS_DIR/IDENTITY.sock (an identity that is not a plain name
//     [A-Za-z0-9_-]{1,64} never becomes a path), replays the same handshake prefix to that
//     nbdkit and checks that its answers are exactly the ones the router gave;
//  4. writes the buffered ClientHello and from then on only moves bytes both ways
//     (splice(2) through a pipe per direction, no parsing): the TLS handshake, with only
//     that VMA's key, is between the client and its nbdkit. A client that lied about its
//     identity fails that handshake, because it lacks the key.
//
// The router holds no keys, no list of VMAs and no state beyond open connections: which
// identities exist is the set of sockets in SOCKETS_DIR (a 0700 directory of the OMA's).
// So it can run as its own process (migratekit-nbd-router), kept across OMA restarts
// like nbdkit, and copies go on while the OMA restarts.
//
// X.509 mode (config.tls_certificates_dir set): nothing in a TLS ClientHello names the
// client there (libnbd 1.14 sends as SNI the URI's host, which it also resolves and
// checks the server's certificate against, and has no setter for it; the client's
// certificate travels encrypted in TLS 1.3), so the router cannot route without ending
// TLS itself. After STARTTLS (step 1) it does the TLS handshake as the server:
//   DIR/server-cert.pem, DIR/server-key.pem  the OMA's NBD server certificate
//   DIR/client-ca.pem  the ONLY issuer trusted for clients: the OMA's client CA (not the
//                      operator's CA, which may have signed certificates with any name)
//   DIR/ca-crl.pem     that CA's revocation list
// read again for every connection (a revocation counts from the next handshake, with
// no restart). A client must present a certificate that verifies against them; its
// subject's CN (the VMA id the OMA signed, or "oma") is the identity: the client cannot
// choose another. The router then connects to SOCKETS_DIR/IDENTITY.sock, where that
// VMA's nbdkit speaks plain NBD (no TLS: the socket's directory is 0700), sends it the
// client's handshake flags after its greeting, and from then on decrypts what the
// client sends into that socket and encrypts what comes back (two threads per
// connection, one per direction; GnuTLS allows one sender and one receiver at once).
//
// Limits: the handshake (steps 1-3) must finish within handshake_timeout; at most
// max_handshakes connections may be in it and max_connections open in all; past that,
// new connections are closed at once. Every refusal is logged with the peer's address
// and why, never with key material.
//
// Owns its listening socket, the connections and their threads. start()/stop() are not
// to be called concurrently; port() and the counters are thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>

namespace mk::oma {

struct NbdRouterConfig {
  std::string listen_address = "0.0.0.0";
  int port = 10809;          // 0: a free port (see port())
  std::string sockets_dir;   // where IDENTITY.sock are
  std::string tls_certificates_dir;  // X.509 mode: the router ends TLS (see above); "" = PSK
  std::chrono::milliseconds handshake_timeout{10000};
  int max_handshakes = 64;
  int max_connections = 1024;
};

class NbdRouter {
 public:
  static constexpr size_t kMaxClientHello = 16384;

  explicit NbdRouter(NbdRouterConfig config);
  ~NbdRouter();  // stop()

  // Binds and listens, then accepts on a thread. Throws mk::Error if it cannot bind.
  void start();
  // Stops accepting, ends every open connection and waits for their threads.
  void stop();
  int port() const { return port_; }
  // Connections routed to a server so far, and refused before routing.
  uint64_t routed() const { return routed_.load(); }
  uint64_t refused() const { return refused_.load(); }
  int open_connections() const { return open_.load(); }

 private:
  void accept_loop();
  void serve(int client, std::string peer);

  NbdRouterConfig config_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // stop() writes to wake the accept loop
  int port_ = 0;
  std::thread acceptor_;
  std::mutex mu_;           // guards fds_
  std::condition_variable idle_;
  std::set<int> fds_;       // every open socket of every connection (stop() shuts them down)
  std::atomic<bool> stopping_{false};
  std::atomic<int> open_{0};
  std::atomic<int> handshaking_{0};
  std::atomic<uint64_t> routed_{0};
  std::atomic<uint64_t> refused_{0};
};

// The PSK identity of the first entry of a TLS 1.3 ClientHello's pre_shared_key
// extension. `records` holds TLS records (type 22, handshake) as read from the wire,
// starting at the first. Returns nullopt and sets `why` when the hello is not complete
// yet (`why` = "incomplete") or is malformed or has no such extension (why it is not).
std::optional<std::string> client_hello_psk_identity(std::string_view records, std::string& why);

// The CN of the subject of the X.509 certificate `der`, or "" when it has none or
// cannot be read.
std::string certificate_common_name(std::string_view der);

// True for the identities the router turns into socket names: [A-Za-z0-9_-]{1,64}.
bool is_routable_identity(std::string_view identity);

// BIN/../lib/migratekit/migratekit-nbd-router for the running binary BIN/x (the build
// tree and the installed tree alike; a helper, not an operator's command).
std::string default_nbd_router_path();

}  // namespace mk::oma
