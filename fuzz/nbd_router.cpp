// libFuzzer target: the NBD router (oma/exports/nbd_router.h), the OMA's front end on its
// NBD port that any host able to reach the port talks to before TLS: the NBD handshake up
// to STARTTLS and the TLS ClientHello it reads the PSK identity from.
// Input: a selector byte, then bytes.
//  - selector even: the bytes are TLS records given to client_hello_psk_identity();
//    checks: an identity found is non-empty and lies within the records; a refusal says
//    why.
//  - selector odd: the bytes are what a client sends on a TCP connection to a running
//    router on 127.0.0.1 (then it closes its sending side and reads until the router
//    closes). SOCKETS holds one server, vma-fuzz.sock, that greets and acknowledges
//    STARTTLS as nbdkit does, so a hello naming "vma-fuzz" is routed. Checks: the router
//    ends the connection and its threads, and counts it at most once (routed or refused;
//    NBD_OPT_ABORT is neither).
// Process-wide: one router and one server, started once, never stopped.
#include <fmt/format.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/log.h"
#include "fuzz_support.h"
#include "oma/exports/nbd_router.h"

namespace {

using namespace std::chrono_literals;

const char kGreeting[18] = {'N', 'B', 'D', 'M', 'A', 'G', 'I', 'C', 'I', 'H', 'A', 'V', 'E', 'O', 'P', 'T', 0, 3};
// The STARTTLS acknowledgement: reply magic, option 5, NBD_REP_ACK, no data.
const unsigned char kAck[20] = {0x00, 0x03, 0xe8, 0x89, 0x04, 0x55, 0x65, 0xa9, 0, 0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 0};

// The server behind the router: greets, reads the client's flags and STARTTLS, acks,
// then reads until the router closes.
void serve_backend(int fd) {
  char buf[4096];
  if (::write(fd, kGreeting, sizeof kGreeting) == static_cast<ssize_t>(sizeof kGreeting)) {
    size_t got = 0;
    while (got < 20) {
      ssize_t r = ::read(fd, buf, 20 - got);
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    if (got == 20 && ::write(fd, kAck, sizeof kAck) == static_cast<ssize_t>(sizeof kAck)) {
      while (::read(fd, buf, sizeof buf) > 0) {
      }
    }
  }
  ::close(fd);
}

void start_backend(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un u{};
  u.sun_family = AF_UNIX;
  std::memcpy(u.sun_path, path.c_str(), path.size() + 1);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&u), sizeof u) != 0 || ::listen(fd, 64) != 0) {
    mk::fuzz::fail("cannot listen on " + path);
  }
  std::thread([fd] {
    for (;;) {
      int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) std::thread(serve_backend, c).detach();
    }
  }).detach();
}

mk::oma::NbdRouter& router() {
  static mk::oma::NbdRouter* r = [] {
    const std::string dir = mk::fuzz::private_temp_dir("mk-fuzz-nbd-router");
    start_backend(dir + "/vma-fuzz.sock");
    mk::oma::NbdRouterConfig c;
    c.listen_address = "127.0.0.1";
    c.port = 0;
    c.sockets_dir = dir;
    c.handshake_timeout = 2s;
    auto* router = new mk::oma::NbdRouter(c);  // lives until the process ends
    router->start();
    return router;
  }();
  return *r;
}

void identity_of(const std::string& records) {
  std::string why;
  auto id = mk::oma::client_hello_psk_identity(records, why);
  if (!id) {
    if (why.empty()) mk::fuzz::fail("a refused ClientHello without a reason");
    return;
  }
  if (id->empty()) mk::fuzz::fail("an empty PSK identity was accepted");
  if (records.find(*id) == std::string::npos) mk::fuzz::fail("a PSK identity that is not in the records: " + *id);
  (void)mk::oma::is_routable_identity(*id);
}

void connection(const std::string& bytes) {
  mk::oma::NbdRouter& r = router();
  const uint64_t counted = r.routed() + r.refused();
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(r.port()));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // libFuzzer's -timeout alarm (SIGALRM) interrupts blocking calls: EINTR is retried, and
  // an interrupted connect() goes on in the background, so it is waited for.
  if (fd < 0) mk::fuzz::fail(fmt::format("cannot make a socket: {}", std::strerror(errno)));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    int err = errno;
    if (err == EINTR) {
      pollfd p{fd, POLLOUT, 0};
      while (::poll(&p, 1, 5000) < 0 && errno == EINTR) {
      }
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err != 0) mk::fuzz::fail(fmt::format("cannot connect to the router: {}", std::strerror(err)));
  }
  // At most 8 KiB (libFuzzer's -max_len): the socket's buffer takes it without a reader.
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t w = ::send(fd, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;  // the router closed the connection already
    off += static_cast<size_t>(w);
  }
  ::shutdown(fd, SHUT_WR);
  char buf[4096];
  for (;;) {
    ssize_t r = ::recv(fd, buf, sizeof buf, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
  }
  ::close(fd);
  auto deadline = std::chrono::steady_clock::now() + 5s;
  while (r.open_connections() > 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(100us);
  if (r.open_connections() > 0) mk::fuzz::fail("the router kept a connection open after both sides closed it");
  if (r.routed() + r.refused() > counted + 1) mk::fuzz::fail("one connection was counted more than once");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mk::log::set_level(mk::log::Level::Off);
  router();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  mk::fuzz::Input in(data, size);
  if (in.selector % 2 == 0) {
    identity_of(in.text);
  } else {
    connection(in.text);
  }
  return 0;
}
