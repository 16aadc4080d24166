// The NBD router (src/oma/exports/nbd_router.h) in-process, in front of a real nbdkit
// (TLS PSK, Unix socket) and driven by real libnbd and by raw sockets playing hostile
// clients: a libnbd client reaches the server of its PSK identity and reads its data;
// an unknown identity is refused; garbage, options other than STARTTLS, a plain-text
// "ClientHello", an oversized one and a silent client are answered as nbdkit would or
// closed within the handshake timeout; past the handshake limit new connections are
// closed at once; and the router still serves a real client after all of them.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libnbd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <thread>

#include "common/endpoint.h"
#include "oma/exports/nbd_router.h"
#include "support/files.h"
#include "support/nbdkit_server.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

using namespace std::chrono_literals;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

int dial(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

// Reads what arrives within `wait`; sets `closed` when the peer closed.
std::string read_for(int fd, std::chrono::milliseconds wait, bool& closed) {
  std::string got;
  closed = false;
  auto end = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(end - std::chrono::steady_clock::now()).count());
    if (::poll(&p, 1, std::max(left, 1)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) {
      closed = true;
      break;
    }
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

std::string be32(uint32_t v) {
  std::string s;
  for (int i = 3; i >= 0; --i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return s;
}
std::string option(uint32_t opt, const std::string& data = "") { return "IHAVEOPT" + be32(opt) + be32(static_cast<uint32_t>(data.size())) + data; }

struct NbdRouterTest : ::testing::Test {
  mk::test::TempDir dir{"mk-nbd-router"};
  std::string sockets = dir.file("sockets");
  std::string psk = mk::test::make_psk_file(dir.file("vma.keys"), "vma-0123456789abcdef");
  std::string disk = dir.file("disk.img");
  std::unique_ptr<mk::test::NbdkitServer> server;
  std::unique_ptr<NbdRouter> router;

  void SetUp() override {
    std::filesystem::create_directories(sockets);
    mk::test::create_sparse_file(disk, 1 << 20);
    mk::test::write_at(disk, 4096, "the VMA's own bytes");
    server = std::make_unique<mk::test::NbdkitServer>(
        mk::test::NbdkitOptions{.plugin = "file", .args = {"file=" + disk}, .tls_psk_file = psk});
    std::filesystem::create_symlink(server->socket_path(), sockets + "/vma-0123456789abcdef.sock");
    NbdRouterConfig c;
    c.listen_address = "127.0.0.1";
    c.port = 0;
    c.sockets_dir = sockets;
    c.handshake_timeout = 500ms;
    c.max_handshakes = 4;
    router = std::make_unique<NbdRouter>(c);
    router->start();
  }

  // "" when a libnbd client with `keys` reads the disk's bytes through the router.
  std::string read_through(const std::string& keys) {
    std::unique_ptr<nbd_handle, decltype(&nbd_close)> h(nbd_create(), nbd_close);
    nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE);
    nbd_set_tls_psk_file(h.get(), keys.c_str());
    nbd_set_tls_username(h.get(), first_psk_identity(keys).c_str());
    if (nbd_connect_tcp(h.get(), "127.0.0.1", std::to_string(router->port()).c_str()) == -1) return nbd_get_error();
    char buf[19];
    if (nbd_pread(h.get(), buf, sizeof buf, 4096, 0) == -1) return nbd_get_error();
    if (std::string(buf, sizeof buf) != "the VMA's own bytes") return "wrong bytes";
    return "";
  }
  // A raw client past the greeting and its flags.
  int greeted() {
    int fd = dial(router->port());
    bool closed;
    std::string g = read_for(fd, 200ms, closed);
    EXPECT_EQ(g.substr(0, 16), "NBDMAGICIHAVEOPT");
    std::string flags = be32(3);
    EXPECT_EQ(::send(fd, flags.data(), 4, 0), 4);
    return fd;
  }
};

TEST_F(NbdRouterTest, AClientReachesTheServerOfItsPskIdentity) {
  EXPECT_EQ(read_through(psk), "");
  EXPECT_EQ(router->routed(), 1u);
  std::string unknown = mk::test::make_psk_file(dir.file("unknown.keys"), "vma-ffffffffffffffff");
  EXPECT_NE(read_through(unknown), "");
  std::string forged = mk::test::make_psk_file(dir.file("forged.keys"), "vma-0123456789abcdef");  // wrong key
  EXPECT_NE(read_through(forged), "");
  std::string hostile = mk::test::make_psk_file(dir.file("hostile.keys"), "..-x");  // never a path
  EXPECT_NE(read_through(hostile), "");
  EXPECT_GE(router->refused(), 2u);
}

TEST_F(NbdRouterTest, HostileAndSlowClientsAreAnsweredOrClosedAndTheRouterGoesOn) {
  bool closed;
  {  // An option other than STARTTLS: NBD_REP_ERR_TLS_REQD, as nbdkit answers it.
    Fd c{greeted()};
    std::string list = option(3);
    ::send(c.fd, list.data(), list.size(), 0);
    std::string reply = read_for(c.fd, 300ms, closed);
    ASSERT_EQ(reply.size(), 20u);
    EXPECT_EQ(reply.substr(12, 4), be32(0x80000005u));
  }
  {  // Not NBD at all.
    Fd c{greeted()};
    std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ::send(c.fd, junk.data(), junk.size(), 0);
    read_for(c.fd, 2s, closed);
    EXPECT_TRUE(closed);
  }
  {  // STARTTLS, then plain text instead of a ClientHello.
    Fd c{greeted()};
    std::string starttls = option(5);
    ::send(c.fd, starttls.data(), starttls.size(), 0);
    std::string ack = read_for(c.fd, 300ms, closed);
    EXPECT_EQ(ack.size(), 20u);
    std::string text = "hello, I am a VMA, let me in\n";
    ::send(c.fd, text.data(), text.size(), 0);
    read_for(c.fd, 2s, closed);
    EXPECT_TRUE(closed);
  }
  {  // A ClientHello announcing more than the router takes.
    Fd c{greeted()};
    std::string starttls = option(5);
    ::send(c.fd, starttls.data(), starttls.size(), 0);
    read_for(c.fd, 300ms, closed);
    std::string record = std::string("\x16\x03\x01\x40\x00", 5) + std::string("\x01\xff\xff\xff", 4) + std::string(16380, 'x');
    ::send(c.fd, record.data(), record.size(), MSG_NOSIGNAL);
    read_for(c.fd, 2s, closed);
    EXPECT_TRUE(closed);
  }
  {  // Silent after the greeting, and half a ClientHello: closed at the handshake timeout.
    Fd silent{greeted()};
    Fd half{greeted()};
    std::string starttls = option(5);
    ::send(half.fd, starttls.data(), starttls.size(), 0);
    std::string part("\x16\x03\x01\x02\x00\x01", 6);
    ::send(half.fd, part.data(), part.size(), 0);
    read_for(silent.fd, 5s, closed);
    EXPECT_TRUE(closed);
    read_for(half.fd, 5s, closed);
    EXPECT_TRUE(closed);
  }
  {  // Past the handshake limit (4), a new connection is closed at once.
    std::vector<std::unique_ptr<Fd>> held;
    for (int i = 0; i < 4; ++i) {
      held.push_back(std::make_unique<Fd>());
      held.back()->fd = dial(router->port());
    }
    std::this_thread::sleep_for(100ms);
    Fd extra{dial(router->port())};
    read_for(extra.fd, 300ms, closed);
    EXPECT_TRUE(closed);
  }
  // After all of them (their timeouts passed), a real client still gets through.
  std::this_thread::sleep_for(700ms);
  EXPECT_EQ(read_through(psk), "");
  for (int i = 0; i < 100 && router->open_connections() > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(router->open_connections(), 0);  // every connection's threads ended
}

TEST_F(NbdRouterTest, AClientsConnectionEndsWhenItsServerStops) {
  std::unique_ptr<nbd_handle, decltype(&nbd_close)> h(nbd_create(), nbd_close);
  nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE);
  nbd_set_tls_psk_file(h.get(), psk.c_str());
  nbd_set_tls_username(h.get(), "vma-0123456789abcdef");
  ASSERT_NE(nbd_connect_tcp(h.get(), "127.0.0.1", std::to_string(router->port()).c_str()), -1) << nbd_get_error();
  char buf[16];
  ASSERT_NE(nbd_pread(h.get(), buf, sizeof buf, 0, 0), -1) << nbd_get_error();
  server->stop();  // as a revoked VMA's nbdkit is
  EXPECT_EQ(nbd_pread(h.get(), buf, sizeof buf, 0, 0), -1);
  for (int i = 0; i < 100 && router->open_connections() > 0; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_EQ(router->open_connections(), 0);
}

TEST(NbdRouterNames, OnlyPlainNamesBecomeSocketNames) {
  EXPECT_TRUE(is_routable_identity("vma-0123456789abcdef"));
  EXPECT_TRUE(is_routable_identity("oma"));
  for (const char* bad : {"", "..", "../x", "a/b", "vma-x.sock", ".oma", "a b", "a\n"}) EXPECT_FALSE(is_routable_identity(bad)) << bad;
  EXPECT_FALSE(is_routable_identity(std::string(65, 'a')));
  std::string why;
  EXPECT_FALSE(client_hello_psk_identity(std::string("\x16\x03\x01\x00\x10", 5), why));
  EXPECT_EQ(why, "incomplete");
  EXPECT_FALSE(client_hello_psk_identity(std::string("\x17\x03\x03\x00\x10", 5) + std::string(16, 'x'), why));
  EXPECT_NE(why, "incomplete");
}

}  // namespace
}  // namespace mk::oma
