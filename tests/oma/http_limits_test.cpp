// The OMA's HTTP limits, tried as an attacker would, against the real `oma` binary over
// raw sockets (issue 13, finding 1): every refused request is refused from its head,
// before its body is read, the connection is closed, and the OMA's peak RSS (VmHWM)
// hardly moves; slow clients neither block others nor stay; connection caps hold; and
// normal use (token GETs, JSON POSTs with and without chunking, keep-alive, Expect,
// the event stream, the GUI's files and its API) still works.
//
// Clients come from several loopback addresses (127.0.0.2, ...: all of 127/8 is local
// on Linux) so that the per-client cap can be told from the total one.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>
#include <httplib.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "oma_process.h"
#include "oma_service.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::ApiClient;

constexpr long kMaxGrowthKiB = 4 * 1024;  // the OMA's peak RSS may grow by less than this per attack
constexpr int kPerClient = 8;
constexpr int kTotal = 40;

// A connected TCP socket from `source` (a loopback address) to 127.0.0.1:port; -1 if not.
int connect_from(const std::string& source, int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &src.sin_addr);
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(static_cast<uint16_t>(port));
  ::inet_pton(AF_INET, "127.0.0.1", &dst.sin_addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&src), sizeof src) != 0 ||
      ::connect(fd, reinterpret_cast<sockaddr*>(&dst), sizeof dst) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

struct Socket {
  int fd;
  explicit Socket(int port, const std::string& source = "127.0.0.1") : fd(connect_from(source, port)) {}
  ~Socket() {
    if (fd >= 0) ::close(fd);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  bool send_all(const std::string& s) const {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    return true;
  }
  // Everything until the peer closes (or resets), or until nothing came for `idle`.
  // `closed` says whether the peer closed.
  std::string read_all(bool* closed = nullptr, std::chrono::milliseconds idle = std::chrono::seconds(20)) const {
    std::string out;
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(idle.count())) <= 0) break;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        if (closed) *closed = true;
        return out;
      }
      out.append(buf, static_cast<size_t>(n));
    }
    if (closed) *closed = false;
    return out;
  }
  // One answer with a Content-Length body (keep-alive: the connection stays open).
  std::string read_answer() const {
    std::string out;
    char buf[4096];
    for (;;) {
      size_t end = out.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t cl = out.find("Content-Length: ");
        size_t len = cl == std::string::npos || cl > end ? 0 : std::stoul(out.substr(cl + 16));
        if (out.size() >= end + 4 + len) return out;
      }
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 20000) <= 0) return out;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<size_t>(n));
    }
  }
};

long vm_hwm_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

int status_of(const std::string& answer) {
  if (answer.rfind("HTTP/1.1 ", 0) != 0 || answer.size() < 12) return 0;
  return std::stoi(answer.substr(9, 3));
}

class HttpLimits : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new mk::test::TempDir("mk-oma-http");
    std::filesystem::create_directories(dir_->file("dist/assets"));
    std::ofstream(dir_->file("dist/index.html")) << "<!doctype html><title>OMA</title><p>gui</p>\n";
    std::ofstream(dir_->file("dist/assets/app-1.js")) << "console.log('gui');\n";
    oma_ = new test::OmaProcess(
        dir_->file("data"), "http://127.0.0.1:9", dir_->file("oma.log"),
        {"--gui-dir", dir_->file("dist"), "--http-head-timeout-ms", "1500", "--http-idle-timeout-ms", "60000",
         "--http-max-connections-per-client", std::to_string(kPerClient), "--http-max-connections",
         std::to_string(kTotal)});
    token_ = test::read_admin_token(dir_->file("data"));
    // gui.port is written after api.port (which OmaProcess waits for).
    for (int i = 0; i < 1500 && gui_port_ <= 0; ++i) {
      std::ifstream gp(dir_->file("data/gui.port"));
      if (!(gp >> gui_port_)) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_GT(gui_port_, 0) << "oma did not write gui.port";
  }
  static void TearDownTestSuite() {
    delete oma_;
    delete dir_;
  }
  void SetUp() override {
    // Warm up (threads, database, allocator) so that VmHWM measures the attack alone.
    ApiClient api(port(), token_);
    for (int i = 0; i < 20; ++i) ASSERT_EQ(api.get("/api/v1/vms").status, 200);
    hwm_before_ = vm_hwm_kib(oma_->process.pid());
    ASSERT_GT(hwm_before_, 0);
  }
  long hwm_growth() const { return vm_hwm_kib(oma_->process.pid()) - hwm_before_; }
  static int port() { return oma_->port; }
  static std::string bearer() { return "Authorization: Bearer " + token_ + "\r\n"; }
  // The OMA still answers a normal client.
  static void expect_alive() {
    ApiClient api(port(), token_);
    EXPECT_EQ(api.get("/api/v1/vms").status, 200);
  }

  static mk::test::TempDir* dir_;
  static test::OmaProcess* oma_;
  static std::string token_;
  static int gui_port_;
  long hwm_before_ = 0;
};

mk::test::TempDir* HttpLimits::dir_ = nullptr;
test::OmaProcess* HttpLimits::oma_ = nullptr;
std::string HttpLimits::token_;
int HttpLimits::gui_port_ = 0;

// 400 MB of chunked body without a token: 401 from the head; the body is never read
// (the client cannot get it all out before the OMA closes) and the OMA's peak RSS stays.
TEST_F(HttpLimits, ChunkedPostWithoutTokenIsRefusedBeforeItsBody) {
  Socket s(port());
  ASSERT_GE(s.fd, 0);
  timeval tv{10, 0};
  ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ASSERT_TRUE(s.send_all("POST /api/v1/vms HTTP/1.1\r\nHost: oma\r\nContent-Type: application/json\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n"));
  const std::string chunk = "100000\r\n" + std::string(1 << 20, 'x') + "\r\n";  // 1 MiB
  size_t sent = 0;
  while (sent < 400u * 1000 * 1000 && s.send_all(chunk)) sent += chunk.size();
  EXPECT_LT(sent, 64u << 20) << "the OMA kept reading the body of a request without a token";
  std::string answer = s.read_all();
  EXPECT_EQ(status_of(answer), 401) << answer;
  EXPECT_LT(hwm_growth(), kMaxGrowthKiB);
  expect_alive();
}

TEST_F(HttpLimits, HugeContentLengthIsRefusedBeforeItsBody) {
  for (bool with_token : {false, true}) {
    Socket s(port());
    ASSERT_TRUE(s.send_all("POST /api/v1/vms HTTP/1.1\r\nHost: oma\r\nContent-Type: application/json\r\n" +
                           (with_token ? bearer() : std::string()) +
                           "Content-Length: 400000000000\r\n\r\n{\"vm_id\":"));
    bool closed = false;
    std::string answer = s.read_all(&closed);
    EXPECT_EQ(status_of(answer), with_token ? 413 : 401) << answer;
    EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
    EXPECT_TRUE(closed) << "the connection stays open after a refused request";
  }
  EXPECT_LT(hwm_growth(), kMaxGrowthKiB);
  expect_alive();
}

TEST_F(HttpLimits, OverlongRequestLineIs414) {
  Socket s(port());
  // Sent as far as the OMA takes it; it answers once the line passes the limit.
  (void)s.send_all("GET /api/v1/vms?x=" + std::string(1 << 20, 'a'));
  bool closed = false;
  std::string answer = s.read_all(&closed);
  EXPECT_EQ(status_of(answer), 414) << answer.substr(0, 200);
  EXPECT_TRUE(closed);
  EXPECT_LT(hwm_growth(), kMaxGrowthKiB);
}

TEST_F(HttpLimits, TooManyHeadersAre431) {
  Socket s(port());
  std::string head = "GET /api/v1/vms HTTP/1.1\r\nHost: oma\r\n" + bearer();
  for (int i = 0; i < 200; ++i) head += "X-H" + std::to_string(i) + ": v\r\n";
  (void)s.send_all(head + "\r\n");
  bool closed = false;
  std::string answer = s.read_all(&closed);
  EXPECT_EQ(status_of(answer), 431) << answer;
  EXPECT_TRUE(closed);
}

TEST_F(HttpLimits, OversizedHeadersAre431) {
  {  // one line over the line limit
    Socket s(port());
    (void)s.send_all("GET /api/v1/vms HTTP/1.1\r\nHost: oma\r\n" + bearer() + "X-Big: " + std::string(12000, 'b') +
                     "\r\n\r\n");
    bool closed = false;
    std::string answer = s.read_all(&closed);
    EXPECT_EQ(status_of(answer), 431) << answer;
    EXPECT_TRUE(closed);
  }
  {  // a head that never ends: refused once it passes the head limit, not read on
    Socket s(port());
    timeval tv{10, 0};
    ::setsockopt(s.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::string lines;
    for (int i = 0; i < 1000; ++i) lines += "X-Line: " + std::string(1000, 'c') + "\r\n";  // ~1 MB
    (void)s.send_all("GET /api/v1/vms HTTP/1.1\r\n");
    size_t sent = 0;
    for (int i = 0; i < 100 && s.send_all(lines); ++i) sent += lines.size();
    EXPECT_LT(sent, 64u << 20);
    std::string answer = s.read_all();
    EXPECT_EQ(status_of(answer), 431) << answer.substr(0, 200);
  }
  EXPECT_LT(hwm_growth(), kMaxGrowthKiB);
  expect_alive();
}

// Compressed request bodies are refused (415), whatever they would inflate to.
TEST_F(HttpLimits, CompressedBodyIs415) {
  for (const char* encoding : {"gzip", "br", "deflate"}) {
    Socket s(port());
    std::string body(64, '\x1f');
    (void)s.send_all(fmt::format("POST /api/v1/vms HTTP/1.1\r\nHost: oma\r\n{}Content-Type: application/json\r\n"
                                 "Content-Encoding: {}\r\nContent-Length: {}\r\n\r\n{}",
                                 bearer(), encoding, body.size(), body));
    bool closed = false;
    std::string answer = s.read_all(&closed);
    EXPECT_EQ(status_of(answer), 415) << encoding << ": " << answer;
    EXPECT_TRUE(closed);
  }
}

// Slow clients (a header byte every 100 ms) take no worker: more of them than the OMA
// has worker threads, and a normal client is still answered; then each one is answered
// 408 and dropped once its head is late.
TEST_F(HttpLimits, SlowClientsNeitherBlockOthersNorStay) {
  const int slow = 24;  // more than the 16 worker threads
  std::vector<std::unique_ptr<Socket>> clients;
  for (int i = 0; i < slow; ++i) {
    clients.push_back(std::make_unique<Socket>(port(), "127.0.1." + std::to_string(1 + i / kPerClient)));
    ASSERT_GE(clients.back()->fd, 0);
    ASSERT_TRUE(clients.back()->send_all("GET /health HTTP/1.1\r\nX-Slow: "));
  }
  std::atomic<bool> stop{false};
  std::thread dribble([&] {
    while (!stop) {
      for (auto& c : clients) (void)::send(c->fd, "a", 1, MSG_NOSIGNAL);
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  {
    ApiClient api(port(), token_);
    EXPECT_EQ(api.get("/api/v1/vms").status, 200);
    EXPECT_EQ(api.get("/health").status, 200);
  }
  for (auto& c : clients) {
    bool closed = false;
    std::string answer = c->read_all(&closed);
    EXPECT_EQ(status_of(answer), 408) << answer;
    EXPECT_TRUE(closed);
  }
  stop = true;
  dribble.join();
  expect_alive();
}

// At most kPerClient connections from one address, kTotal in all: the next is answered
// 503 and closed, others are still served, and a closed connection frees its place.
TEST_F(HttpLimits, ConnectionCapsPerClientAndInAll) {
  {
    std::vector<std::unique_ptr<Socket>> mine;
    for (int i = 0; i < kPerClient; ++i) {
      mine.push_back(std::make_unique<Socket>(port(), "127.0.2.1"));
      ASSERT_GE(mine.back()->fd, 0);
    }
    Socket extra(port(), "127.0.2.1");
    bool closed = false;
    std::string answer = extra.read_all(&closed);
    EXPECT_EQ(status_of(answer), 503) << answer;
    EXPECT_NE(answer.find("limit per client"), std::string::npos) << answer;
    EXPECT_TRUE(closed);
    expect_alive();  // from 127.0.0.1
    // Keep-alive connections of the capped client still work.
    ASSERT_TRUE(mine[0]->send_all("GET /health HTTP/1.1\r\nHost: oma\r\n\r\n"));
    EXPECT_EQ(status_of(mine[0]->read_answer()), 200);
  }
  // The closed connections free their places (the OMA notices the close soon, not at once).
  int status = 0;
  for (int i = 0; i < 200 && status != 200; ++i) {
    Socket again(port(), "127.0.2.1");
    (void)again.send_all("GET /health HTTP/1.1\r\nHost: oma\r\nConnection: close\r\n\r\n");
    status = status_of(again.read_all());
    if (status != 200) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_EQ(status, 200);
  // The cap in all. A connection of the checks above may still be counted until the OMA
  // notices its close; if that happens while this block opens its connections, `extra`
  // finds a place (it is served: 200) and the block is tried again.
  int status_extra = 0;
  std::string answer;
  for (int attempt = 0; attempt < 20 && status_extra != 503; ++attempt) {
    std::vector<std::unique_ptr<Socket>> all;
    for (int i = 0; i < kTotal; ++i) {
      all.push_back(std::make_unique<Socket>(port(), "127.0.3." + std::to_string(1 + i / kPerClient)));
      ASSERT_GE(all.back()->fd, 0);
    }
    Socket extra(port(), "127.0.4.1");
    answer = extra.read_all(nullptr, std::chrono::seconds(3));  // a refusal comes at accept
    if (answer.empty()) {
      (void)extra.send_all("GET /health HTTP/1.1\r\nHost: oma\r\nConnection: close\r\n\r\n");
      answer = extra.read_all();
    }
    status_extra = status_of(answer);
    if (status_extra != 503) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(status_extra, 503) << answer;
  EXPECT_NE(answer.find("its limit"), std::string::npos) << answer;
}

// Refusals from the head close the connection, including on a keep-alive connection.
TEST_F(HttpLimits, RefusalClosesTheConnection) {
  Socket s(port());
  ASSERT_TRUE(s.send_all("GET /api/v1/vms HTTP/1.1\r\nHost: oma\r\n" + bearer() + "\r\n"));
  EXPECT_EQ(status_of(s.read_answer()), 200);
  ASSERT_TRUE(s.send_all("GET /api/v1/vms HTTP/1.1\r\nHost: oma\r\n\r\n"));  // no token
  bool closed = false;
  std::string answer = s.read_all(&closed);
  EXPECT_EQ(status_of(answer), 401) << answer;
  EXPECT_NE(answer.find("Connection: close"), std::string::npos) << answer;
  EXPECT_TRUE(closed);
}

// Normal use: JSON bodies with a length, chunked and with Expect: 100-continue; several
// requests on one connection; the GUI's files and the API on the GUI's port; the event
// stream.
TEST_F(HttpLimits, NormalUseStillWorks) {
  Socket s(port());
  auto post = [&](const std::string& framing, const std::string& body) {
    return s.send_all("POST /api/v1/vms HTTP/1.1\r\nHost: oma\r\nContent-Type: application/json\r\n" + bearer() +
                      framing + "\r\n" + body);
  };
  std::string vm1 = test::vm_body(test::test_vm_uuid(71), 1, 1048576).dump();
  ASSERT_TRUE(post(fmt::format("Content-Length: {}\r\n", vm1.size()), vm1));
  EXPECT_EQ(status_of(s.read_answer()), 201);
  std::string vm2 = test::vm_body(test::test_vm_uuid(72), 1, 1048576).dump();
  std::string half = vm2.substr(0, vm2.size() / 2), rest = vm2.substr(vm2.size() / 2);
  ASSERT_TRUE(post("Transfer-Encoding: chunked\r\n", fmt::format("{:x}\r\n{}\r\n{:x};ext=1\r\n{}\r\n0\r\n\r\n",
                                                                 half.size(), half, rest.size(), rest)));
  EXPECT_EQ(status_of(s.read_answer()), 201);
  std::string vm3 = test::vm_body(test::test_vm_uuid(73), 1, 1048576).dump();
  ASSERT_TRUE(post(fmt::format("Expect: 100-continue\r\nContent-Length: {}\r\n", vm3.size()), ""));
  EXPECT_EQ(s.read_answer().rfind("HTTP/1.1 100 Continue\r\n\r\n", 0), 0u);
  ASSERT_TRUE(s.send_all(vm3));
  EXPECT_EQ(status_of(s.read_answer()), 201);
  ASSERT_TRUE(s.send_all("GET /api/v1/vms/" + test::test_vm_uuid(72) + " HTTP/1.1\r\nHost: oma\r\n" + bearer() + "\r\n"));
  EXPECT_EQ(status_of(s.read_answer()), 200);

  // A body over the limit from a token holder: 413 as soon as it passes it, chunked too.
  {
    Socket big(port());
    std::string body(200 * 1024, ' ');
    (void)big.send_all("POST /api/v1/vms HTTP/1.1\r\nHost: oma\r\nContent-Type: application/json\r\n" + bearer() +
                       "Transfer-Encoding: chunked\r\n\r\n" + fmt::format("{:x}\r\n", body.size()) + body);
    EXPECT_EQ(status_of(big.read_all()), 413);
  }

  // The GUI's files, and the API on the GUI's port with the same admission.
  httplib::Client gui("127.0.0.1", gui_port_);
  auto index = gui.Get("/");
  ASSERT_TRUE(index);
  EXPECT_EQ(index->status, 200);
  EXPECT_NE(index->body.find("<p>gui</p>"), std::string::npos);
  auto asset = gui.Get("/assets/app-1.js");
  ASSERT_TRUE(asset);
  EXPECT_EQ(asset->status, 200);
  EXPECT_EQ(ApiClient(gui_port_, token_).get("/api/v1/vms").status, 200);
  EXPECT_EQ(ApiClient(gui_port_, "wrong").get("/api/v1/vms").status, 401);
  {
    Socket g(gui_port_);
    (void)g.send_all("POST /index.html HTTP/1.1\r\nHost: oma\r\nContent-Length: 400000000\r\n\r\n");
    EXPECT_EQ(status_of(g.read_all()), 405);
  }

  // The event stream answers and streams.
  Socket ev(port());
  ASSERT_TRUE(ev.send_all("GET /api/v1/events HTTP/1.1\r\nHost: oma\r\nAccept: text/event-stream\r\n" + bearer() +
                          "\r\n"));
  std::string head;
  char buf[1024];
  while (head.find("\r\n\r\n") == std::string::npos) {
    pollfd p{ev.fd, POLLIN, 0};
    ASSERT_GT(::poll(&p, 1, 20000), 0) << head;
    ssize_t n = ::recv(ev.fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << head;
    head.append(buf, static_cast<size_t>(n));
  }
  EXPECT_EQ(status_of(head), 200) << head;
  EXPECT_NE(head.find("text/event-stream"), std::string::npos) << head;
}

}  // namespace
}  // namespace mk::oma
