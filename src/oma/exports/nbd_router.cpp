#include "oma/exports/nbd_router.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/error.h"
#include "common/host_name.h"
#include "common/log.h"

namespace mk::oma {
namespace {

using Clock = std::chrono::steady_clock;

// NBD fixed-newstyle constants (NBD protocol document; nbdkit's protocol.h).
constexpr char kGreeting[18] = {'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C', 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 3};
// Handshake flags 3: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES, what nbdkit sends.
constexpr uint64_t kOptMagic = 0x49484156454F5054ULL;  // "IHAVEOPT"
constexpr uint64_t kRepMagic = 0x3e889045565a9ULL;
constexpr uint32_t kOptExportName = 1, kOptAbort = 2, kOptStartTls = 5;
constexpr uint32_t kRepAck = 1, kRepErrInvalid = 0x80000003u, kRepErrTlsReqd = 0x80000005u;
constexpr int kMaxOptions = 16;          // options a client may send before STARTTLS
constexpr uint32_t kMaxOptionData = 4096;

uint32_t be32(const unsigned char* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint64_t be64(const unsigned char* p) { return (uint64_t(be32(p)) << 32) | be32(p + 4); }
void put32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
void put64(std::string& s, uint64_t v) {
  put32(s, static_cast<uint32_t>(v >> 32));
  put32(s, static_cast<uint32_t>(v));
}

std::string option_reply(uint32_t option, uint32_t type) {
  std::string r;
  put64(r, kRepMagic);
  put32(r, option);
  put32(r, type);
  put32(r, 0);
  return r;
}

// Waits until fd is ready for `events` or the deadline passes. False on timeout/error.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return false;
  }
}

// Reads exactly n bytes before the deadline; "" on success, else why not.
std::string read_exact(int fd, void* buf, size_t n, Clock::time_point deadline) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    if (!wait_ready(fd, POLLIN, deadline)) return "timed out";
    ssize_t r = ::recv(fd, p, n, MSG_DONTWAIT);
    if (r == 0) return "closed the connection";
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return std::strerror(errno);
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return "";
}

std::string write_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    if (!wait_ready(fd, POLLOUT, deadline)) return "timed out";
    ssize_t r = ::send(fd, data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
      return std::strerror(errno);
    }
    data.remove_prefix(static_cast<size_t>(r));
  }
  return "";
}

std::string peer_name(const sockaddr_storage& a) {
  auto [host, port] = socket_address(a);
  return fmt::format("{}:{}", host.empty() ? "?" : host, port);
}

// Moves bytes from `in` to `out` until EOF or an error on either, through a pipe with
// splice(2): the data never enters user space. Never SPLICE_F_MORE: on TCP it corks the
// data (MSG_MORE), so a TLS handshake message or an NBD reply would wait up to 200 ms
// for more (measured: 0.6 s per connection's handshake, and copies at half speed). Then shuts both sockets down, which ends
// the other direction too: an NBD connection has no use for half a connection.
void relay(int in, int out) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) == 0) {
    ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);  // fewer round trips; the default (64 KiB) if refused
    for (;;) {
      ssize_t n = ::splice(in, nullptr, p[1], nullptr, 1 << 20, SPLICE_F_MOVE);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      bool ok = true;
      while (n > 0) {
        ssize_t m = ::splice(p[0], nullptr, out, nullptr, static_cast<size_t>(n), SPLICE_F_MOVE);
        if (m < 0 && errno == EINTR) continue;
        if (m <= 0) {
          ok = false;
          break;
        }
        n -= m;
      }
      if (!ok) break;
    }
    ::close(p[0]);
    ::close(p[1]);
  }
  ::shutdown(in, SHUT_RDWR);
  ::shutdown(out, SHUT_RDWR);
}

// A server-side GnuTLS session and its credentials (X.509 mode), freed together.
struct TlsServer {
  gnutls_certificate_credentials_t cred = nullptr;
  gnutls_session_t session = nullptr;
  TlsServer() = default;
  TlsServer(const TlsServer&) = delete;
  TlsServer& operator=(const TlsServer&) = delete;
  ~TlsServer() {
    if (session) gnutls_deinit(session);
    if (cred) gnutls_certificate_free_credentials(cred);
  }
};

// The TLS handshake as the server on `fd` with DIR's files (nbd_router.h), requiring a
// client certificate that verifies against DIR/client-ca.pem and DIR/ca-crl.pem for
// TLS client use. "" and `identity` = its CN on success, else why not.
std::string tls_accept(int fd, const std::string& dir, Clock::time_point deadline, TlsServer& t,
                       std::string& identity) {
  int r = gnutls_certificate_allocate_credentials(&t.cred);
  if (r < 0) return fmt::format("TLS credentials: {}", gnutls_strerror(r));
  std::string cert = dir + "/server-cert.pem", key = dir + "/server-key.pem", ca = dir + "/client-ca.pem",
              crl = dir + "/ca-crl.pem";
  if ((r = gnutls_certificate_set_x509_key_file(t.cred, cert.c_str(), key.c_str(), GNUTLS_X509_FMT_PEM)) < 0)
    return fmt::format("cannot load the server certificate {} and key {}: {}", cert, key, gnutls_strerror(r));
  if ((r = gnutls_certificate_set_x509_trust_file(t.cred, ca.c_str(), GNUTLS_X509_FMT_PEM)) <= 0)
    return fmt::format("cannot load the client CA {}: {}", ca, r < 0 ? gnutls_strerror(r) : "no certificate in it");
  // Without its revocation list the router would let revoked certificates through.
  if ((r = gnutls_certificate_set_x509_crl_file(t.cred, crl.c_str(), GNUTLS_X509_FMT_PEM)) <= 0)
    return fmt::format("cannot load the revocation list {}: {}", crl, r < 0 ? gnutls_strerror(r) : "empty");
  if ((r = gnutls_init(&t.session, GNUTLS_SERVER)) < 0) return fmt::format("TLS session: {}", gnutls_strerror(r));
  gnutls_set_default_priority(t.session);
  gnutls_credentials_set(t.session, GNUTLS_CRD_CERTIFICATE, t.cred);
  gnutls_certificate_server_set_request(t.session, GNUTLS_CERT_REQUIRE);
  gnutls_transport_set_int(t.session, fd);
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  gnutls_handshake_set_timeout(t.session, static_cast<unsigned>(std::max<long long>(left, 1)));
  do r = gnutls_handshake(t.session);
  while (r < 0 && !gnutls_error_is_fatal(r));
  if (r < 0) return fmt::format("TLS handshake: {}", gnutls_strerror(r));
  unsigned status = 0;
  gnutls_typed_vdata_st purpose{GNUTLS_DT_KEY_PURPOSE_OID,
                                reinterpret_cast<unsigned char*>(const_cast<char*>(GNUTLS_KP_TLS_WWW_CLIENT)), 0};
  if ((r = gnutls_certificate_verify_peers(t.session, &purpose, 1, &status)) < 0)
    return fmt::format("the client certificate: {}", gnutls_strerror(r));
  if (status != 0) {
    gnutls_datum_t text{};
    std::string why = "does not verify";
    if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) == 0) {
      why = reinterpret_cast<const char*>(text.data);
      gnutls_free(text.data);
    }
    return fmt::format("the client certificate is refused (not one the OMA issued, or revoked): {}", why);
  }
  unsigned n = 0;
  const gnutls_datum_t* peers = gnutls_certificate_get_peers(t.session, &n);
  if (!peers || n == 0) return "the client sent no certificate";
  identity = certificate_common_name(std::string_view(reinterpret_cast<const char*>(peers[0].data), peers[0].size));
  if (identity.empty()) return "the client certificate has no single CN";
  return "";
}

// Reads with `read` and writes all of it with `write` until either side ends or fails,
// then shuts both sockets down (which also ends the other direction's relay). Each
// returns what recv/send return, retrying interruptions itself.
template <typename Read, typename Write>
void relay(Read read, Write write, int client, int backend) {
  std::vector<char> buf(1 << 18);
  auto forward = [&](ssize_t n) {
    for (ssize_t done = 0, m; done < n; done += m) {
      if ((m = write(buf.data() + done, static_cast<size_t>(n - done))) <= 0) return false;
    }
    return true;
  };
  for (ssize_t n; (n = read(buf.data(), buf.size())) > 0 && forward(n);) {
  }
  ::shutdown(client, SHUT_RDWR);
  ::shutdown(backend, SHUT_RDWR);
}

// The client's TLS records and the backend's plain socket, as relay() reads and writes them.
auto tls_recv(gnutls_session_t s) {
  return [s](char* p, size_t n) {
    for (;;) {
      ssize_t r = gnutls_record_recv(s, p, n);
      if (r != GNUTLS_E_INTERRUPTED && r != GNUTLS_E_AGAIN) return r;
    }
  };
}
auto tls_send(gnutls_session_t s) {
  return [s](const char* p, size_t n) {
    for (;;) {
      ssize_t r = gnutls_record_send(s, p, n);
      if (r != GNUTLS_E_INTERRUPTED && r != GNUTLS_E_AGAIN) return r;
    }
  };
}
auto socket_recv(int fd) {
  return [fd](char* p, size_t n) {
    for (;;) {
      ssize_t r = ::recv(fd, p, n, 0);
      if (!(r < 0 && errno == EINTR)) return r;
    }
  };
}
auto socket_send(int fd) {
  return [fd](const char* p, size_t n) {
    for (;;) {
      ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
      if (!(r < 0 && errno == EINTR)) return r;
    }
  };
}

}  // namespace

std::string certificate_common_name(std::string_view der) {
  gnutls_x509_crt_t crt;
  if (gnutls_x509_crt_init(&crt) < 0) return "";
  gnutls_datum_t d{reinterpret_cast<unsigned char*>(const_cast<char*>(der.data())), static_cast<unsigned>(der.size())};
  std::string cn;
  char buf[256];
  size_t size = sizeof buf, second = sizeof buf;
  char other[256];
  if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_DER) == 0 &&
      gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &size) == 0 &&
      gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 1, 0, other, &second) ==
          GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
    cn.assign(buf, size);
  gnutls_x509_crt_deinit(crt);
  return cn;
}

bool is_routable_identity(std::string_view id) {
  if (id.empty() || id.size() > 64) return false;
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return false;
  return true;
}

std::optional<std::string> client_hello_psk_identity(std::string_view records, std::string& why) {
  // Reassemble the handshake message from the records.
  std::string hs;
  size_t pos = 0;
  for (;;) {
    if (records.size() - pos < 5) {
      why = "incomplete";
      return std::nullopt;
    }
    auto* h = reinterpret_cast<const unsigned char*>(records.data() + pos);
    if (h[0] != 22) {
      why = fmt::format("not a TLS handshake record (type {})", h[0]);
      return std::nullopt;
    }
    if (h[1] != 3) {
      why = "not a TLS record (version)";
      return std::nullopt;
    }
    size_t len = (size_t(h[3]) << 8) | h[4];
    if (len == 0 || len > 16384) {
      why = fmt::format("a TLS record of {} bytes", len);
      return std::nullopt;
    }
    if (records.size() - pos - 5 < len) {
      why = "incomplete";
      return std::nullopt;
    }
    hs.append(records.data() + pos + 5, len);
    pos += 5 + len;
    if (hs.size() >= 4) {
      auto* m = reinterpret_cast<const unsigned char*>(hs.data());
      if (m[0] != 1) {
        why = fmt::format("the first handshake message is type {}, not a ClientHello", m[0]);
        return std::nullopt;
      }
      size_t mlen = (size_t(m[1]) << 16) | (size_t(m[2]) << 8) | m[3];
      if (mlen + 4 > NbdRouter::kMaxClientHello) {
        why = fmt::format("a ClientHello of {} bytes (at most {})", mlen + 4, NbdRouter::kMaxClientHello);
        return std::nullopt;
      }
      if (hs.size() >= mlen + 4) {
        hs.resize(mlen + 4);
        break;
      }
    }
  }
  // ClientHello body: version(2) random(32) session_id<0..32> cipher_suites<2..> compression<1..> extensions<..>
  auto* b = reinterpret_cast<const unsigned char*>(hs.data()) + 4;
  size_t n = hs.size() - 4, i = 34;
  auto skip = [&](size_t len_bytes) -> bool {
    if (i + len_bytes > n) return false;
    size_t l = len_bytes == 1 ? b[i] : (size_t(b[i]) << 8) | b[i + 1];
    i += len_bytes;
    if (i + l > n) return false;
    i += l;
    return true;
  };
  if (n < 34 || !skip(1) || !skip(2) || !skip(1)) {
    why = "a malformed ClientHello";
    return std::nullopt;
  }
  if (i + 2 > n) {
    why = "a ClientHello without extensions (not TLS 1.3 with a PSK)";
    return std::nullopt;
  }
  size_t ext_end = i + 2 + ((size_t(b[i]) << 8) | b[i + 1]);
  i += 2;
  if (ext_end > n) {
    why = "a malformed ClientHello (extensions)";
    return std::nullopt;
  }
  while (i + 4 <= ext_end) {
    unsigned type = (unsigned(b[i]) << 8) | b[i + 1];
    size_t len = (size_t(b[i + 2]) << 8) | b[i + 3];
    i += 4;
    if (i + len > ext_end) break;
    if (type == 41) {  // pre_shared_key: identities<7..>: identity<1..>, obfuscated_ticket_age(4)
      if (len < 2 + 2 + 1) break;
      size_t ids = (size_t(b[i]) << 8) | b[i + 1];
      size_t idlen = (size_t(b[i + 2]) << 8) | b[i + 3];
      if (ids < idlen + 6 || 2 + ids > len || idlen == 0) break;
      return std::string(reinterpret_cast<const char*>(b + i + 4), idlen);
    }
    i += len;
  }
  why = "a ClientHello without a TLS 1.3 pre_shared_key extension (this port takes TLS 1.3 with the VMA's PSK)";
  return std::nullopt;
}

std::string default_nbd_router_path() {
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "lib/migratekit/migratekit-nbd-router";
  return (exe.parent_path().parent_path() / "lib" / "migratekit" / "migratekit-nbd-router").string();
}

NbdRouter::NbdRouter(NbdRouterConfig config) : config_(std::move(config)) {
  if (config_.sockets_dir.empty()) throw UsageError("the NBD router needs a sockets directory");
}

NbdRouter::~NbdRouter() { stop(); }

void NbdRouter::start() {
  ::signal(SIGPIPE, SIG_IGN);  // splice() into a socket the peer closed
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(config_.port));
  if (inet_pton(AF_INET, config_.listen_address.c_str(), &a.sin_addr) != 1)
    throw UsageError(fmt::format("NBD router: '{}' is not an IPv4 address to listen on", config_.listen_address));
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 128) != 0) {
    int e = errno;
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    throw Error(fmt::format("NBD router: cannot listen on {}:{}: {} (is another server on that port?)",
                            config_.listen_address, config_.port, std::strerror(e)));
  }
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  if (::pipe2(wake_, O_CLOEXEC) != 0) throw Error(fmt::format("NBD router: pipe: {}", std::strerror(errno)));
  stopping_ = false;
  acceptor_ = std::thread([this] { accept_loop(); });
  log::info("NBD router on {}:{}: each connection goes to SOCKETS/IDENTITY.sock in {} by its {}",
            config_.listen_address, port_, config_.sockets_dir,
            config_.tls_certificates_dir.empty()
                ? "TLS PSK identity"
                : "X.509 client certificate's CN (TLS ends here, certificates in " + config_.tls_certificates_dir + ")");
}

void NbdRouter::stop() {
  if (!acceptor_.joinable()) return;
  stopping_ = true;
  char c = 0;
  (void)!::write(wake_[1], &c, 1);
  acceptor_.join();
  ::close(listen_fd_);
  ::close(wake_[0]);
  ::close(wake_[1]);
  listen_fd_ = wake_[0] = wake_[1] = -1;
  std::unique_lock lk(mu_);
  for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  idle_.wait(lk, [this] { return open_.load() == 0; });
}

void NbdRouter::accept_loop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) continue;
    if (p[1].revents) break;
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    std::string who = peer_name(peer);
    if (open_.load() >= config_.max_connections || handshaking_.load() >= config_.max_handshakes) {
      refused_++;
      log::warn("NBD router: refused {}: {} connections open, {} in the handshake (limits {}, {})", who, open_.load(),
                handshaking_.load(), config_.max_connections, config_.max_handshakes);
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    {
      std::lock_guard lk(mu_);
      fds_.insert(fd);
    }
    open_++;
    handshaking_++;
    std::thread([this, fd, who] { serve(fd, who); }).detach();
  }
}

void NbdRouter::serve(int client, std::string peer) {
  int backend = -1;
  bool handshaking = true;
  auto done_handshake = [&] {
    if (handshaking) handshaking_--;
    handshaking = false;
  };
  auto finish = [&] {
    done_handshake();
    std::lock_guard lk(mu_);
    fds_.erase(client);
    ::close(client);
    if (backend >= 0) {
      fds_.erase(backend);
      ::close(backend);
    }
    open_--;
    idle_.notify_all();
  };
  auto refuse = [&](const std::string& why) {
    refused_++;
    log::warn("NBD router: closed the connection from {}: {}", peer, why);
    finish();
  };
  auto deadline = Clock::now() + config_.handshake_timeout;
  std::string err;
  // 1. The NBD handshake up to STARTTLS, as nbdkit --tls=require speaks it.
  if (!(err = write_all(client, std::string_view(kGreeting, sizeof kGreeting), deadline)).empty())
    return refuse("greeting: " + err);
  unsigned char cflags[4];
  if (!(err = read_exact(client, cflags, 4, deadline)).empty()) return refuse("client flags: " + err);
  bool started_tls = false;
  for (int n = 0; n < kMaxOptions && !started_tls; ++n) {
    unsigned char h[16];
    if (!(err = read_exact(client, h, 16, deadline)).empty()) return refuse("option: " + err);
    if (be64(h) != kOptMagic) return refuse("not an NBD option (bad magic)");
    uint32_t option = be32(h + 8), len = be32(h + 12);
    if (option == kOptExportName) return refuse("NBD_OPT_EXPORT_NAME before TLS (this port requires TLS)");
    if (len > kMaxOptionData) return refuse(fmt::format("option {} with {} bytes of data before TLS", option, len));
    char discard[kMaxOptionData];
    if (len && !(err = read_exact(client, discard, len, deadline)).empty()) return refuse("option data: " + err);
    uint32_t reply = option == kOptStartTls ? (len ? kRepErrInvalid : kRepAck)
                     : option == kOptAbort  ? kRepAck
                                            : kRepErrTlsReqd;
    if (!(err = write_all(client, option_reply(option, reply), deadline)).empty()) return refuse("reply: " + err);
    if (option == kOptAbort) return finish();
    started_tls = option == kOptStartTls && reply == kRepAck;
  }
  if (!started_tls) return refuse(fmt::format("no NBD_OPT_STARTTLS within {} options", kMaxOptions));
  // Connects to `identity`'s server and reads its greeting: "" or why not.
  auto connect_backend = [&](const std::string& identity, const char* kind) -> std::string {
    std::string path = config_.sockets_dir + "/" + identity + ".sock";
    backend = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un u{};
    u.sun_family = AF_UNIX;
    if (backend < 0 || path.size() >= sizeof u.sun_path) return "cannot make a socket for " + path;
    {
      std::lock_guard lk(mu_);
      fds_.insert(backend);
    }
    std::memcpy(u.sun_path, path.c_str(), path.size() + 1);
    if (::connect(backend, reinterpret_cast<sockaddr*>(&u), sizeof u) != 0)
      return fmt::format("{} '{}' has no server here ({}): unknown, pending or revoked VMA", kind, identity,
                         std::strerror(errno));
    char greeting[sizeof kGreeting];
    if (!(err = read_exact(backend, greeting, sizeof greeting, deadline)).empty())
      return fmt::format("the server of '{}' did not greet: {}", identity, err);
    if (std::memcmp(greeting, kGreeting, sizeof kGreeting) != 0)
      return fmt::format("the server of '{}' greets differently from the router (handshake flags)", identity);
    return "";
  };
  if (!config_.tls_certificates_dir.empty()) {
    // X.509: the router ends TLS; the identity is the verified certificate's CN.
    TlsServer tls;
    std::string identity;
    if (!(err = tls_accept(client, config_.tls_certificates_dir, deadline, tls, identity)).empty()) return refuse(err);
    if (!is_routable_identity(identity)) return refuse("a client certificate whose CN is not a plain name");
    if (!(err = connect_backend(identity, "certificate")).empty()) return refuse(err);
    // The client's flags, then plain NBD: its options continue inside TLS.
    if (!(err = write_all(backend, std::string_view(reinterpret_cast<char*>(cflags), 4), deadline)).empty())
      return refuse(fmt::format("the server of '{}': {}", identity, err));
    done_handshake();
    routed_++;
    log::info("NBD router: {} -> server of '{}' (X.509, TLS ended here)", peer, identity);
    std::thread back([&tls, client, b = backend] { relay(socket_recv(b), tls_send(tls.session), client, b); });
    relay(tls_recv(tls.session), socket_send(backend), client, backend);
    back.join();
    return finish();
  }
  // 2. The ClientHello, buffered, not answered.
  std::string hello, why;
  std::optional<std::string> identity;
  while (!identity) {
    size_t have = hello.size();
    size_t want = 5;  // the next record's header, or the rest of the current record
    if (have >= 5) {
      // Walk the records read so far to see what the next read must complete.
      size_t pos = 0;
      for (;;) {
        if (hello.size() - pos < 5) {
          want = 5 - (hello.size() - pos);
          break;
        }
        size_t len = (size_t(static_cast<unsigned char>(hello[pos + 3])) << 8) | static_cast<unsigned char>(hello[pos + 4]);
        if (hello.size() - pos - 5 < len) {
          want = len - (hello.size() - pos - 5);
          break;
        }
        pos += 5 + len;
      }
    }
    if (have + want > kMaxClientHello + 5 * 4) return refuse("a TLS ClientHello larger than the router takes");
    hello.resize(have + want);
    if (!(err = read_exact(client, hello.data() + have, want, deadline)).empty()) return refuse("ClientHello: " + err);
    identity = client_hello_psk_identity(hello, why);
    if (!identity && why != "incomplete") return refuse(why);
  }
  if (!is_routable_identity(*identity)) return refuse("a PSK identity that is not a plain name");
  // 3. That identity's server, with the same handshake prefix.
  if (!(err = connect_backend(*identity, "PSK identity")).empty()) return refuse(err);
  std::string prefix(reinterpret_cast<char*>(cflags), 4);
  put64(prefix, kOptMagic);
  put32(prefix, kOptStartTls);
  put32(prefix, 0);
  if (!(err = write_all(backend, prefix, deadline)).empty())
    return refuse(fmt::format("the server of '{}': {}", *identity, err));
  unsigned char ack[20];
  if (!(err = read_exact(backend, ack, sizeof ack, deadline)).empty())
    return refuse(fmt::format("the server of '{}' did not answer STARTTLS: {}", *identity, err));
  if (std::string_view(reinterpret_cast<char*>(ack), 20) != option_reply(kOptStartTls, kRepAck))
    return refuse(fmt::format("the server of '{}' refused STARTTLS", *identity));
  if (!(err = write_all(backend, hello, deadline)).empty())
    return refuse(fmt::format("the server of '{}': {}", *identity, err));
  // 4. Bytes only, both ways, until either side ends.
  done_handshake();
  routed_++;
  log::info("NBD router: {} -> server of '{}'", peer, *identity);
  std::thread back([client, b = backend] { relay(b, client); });
  relay(client, backend);
  back.join();
  finish();
}

}  // namespace mk::oma
