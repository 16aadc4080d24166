#include "common/bounded_http.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/host_name.h"
#include "common/log.h"

namespace mk::http {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kChunkLineMax = 1024;        // "1a2b;ext=..." of a chunked body
constexpr size_t kLingerMaxBytes = 256 * 1024;  // dropped unread after a refusal
constexpr int kLingerMs = 2000;

thread_local const std::any* t_admitted = nullptr;

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string lowered(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = lower(c);
  return r;
}

bool is_tchar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar); }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

const char* reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

// A complete answer that closes the connection.
std::string closing_answer(int status, const std::string& body, const std::string& content_type,
                           const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
                                status, reason(status), content_type, body.size());
  for (const auto& [k, v] : headers) out += k + ": " + v + "\r\n";
  out += "\r\n";
  out += body;
  return out;
}

// The connection's byte stream, plain or TLS (`ssl` null: plain). The socket is
// non-blocking either way.
constexpr ssize_t kWouldBlock = -1, kFailed = -2;

// One read: > 0 bytes, 0 the peer closed, kWouldBlock, kFailed.
ssize_t io_read(int fd, SSL* ssl, char* buf, size_t size) {
  if (!ssl) {
    ssize_t n = ::recv(fd, buf, size, 0);
    if (n >= 0) return n;
    return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? kWouldBlock : kFailed;
  }
  ERR_clear_error();
  size_t got = 0;
  if (SSL_read_ex(ssl, buf, size, &got) == 1) return static_cast<ssize_t>(got);
  switch (SSL_get_error(ssl, 0)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: return kWouldBlock;
    case SSL_ERROR_ZERO_RETURN: return 0;
    default: return kFailed;
  }
}

// One write without waiting: bytes written (> 0), kWouldBlock or kFailed.
ssize_t io_write_some(int fd, SSL* ssl, const char* data, size_t size) {
  if (!ssl) {
    ssize_t n = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) return n;
    return (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) ? kWouldBlock : kFailed;
  }
  ERR_clear_error();
  size_t put = 0;
  if (SSL_write_ex(ssl, data, size, &put) == 1 && put > 0) return static_cast<ssize_t>(put);
  int e = SSL_get_error(ssl, 0);
  return (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? kWouldBlock : kFailed;
}

// Writes all of `data`, waiting at most `timeout_ms` for each chance to write. False
// when the peer is gone or too slow.
bool write_all(int fd, SSL* ssl, const char* data, size_t size, int timeout_ms) {
  while (size > 0) {
    ssize_t n = io_write_some(fd, ssl, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<size_t>(n);
      continue;
    }
    if (n == kFailed) return false;
    bool want_read = ssl && SSL_want_read(ssl);  // TLS may need the peer's bytes first
    pollfd p{fd, static_cast<short>(want_read ? POLLIN : POLLOUT), 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0 || (p.revents & (POLLERR | POLLNVAL)) || (!want_read && (p.revents & POLLHUP))) return false;
  }
  return true;
}

// Ends our direction: TLS close_notify (if it fits now), then the socket's write side.
void shutdown_write(int fd, SSL* ssl) {
  if (ssl) {
    ERR_clear_error();
    SSL_shutdown(ssl);
  }
  ::shutdown(fd, SHUT_WR);
}

// What httplib's process_request() reads (one request, complete, from memory) and where
// it writes (the connection).
class RequestStream final : public httplib::Stream {
 public:
  RequestStream(int fd, SSL* ssl, const std::string& request, std::string remote, int remote_port, std::string local,
                int local_port, int write_timeout_ms)
      : fd_(fd), ssl_(ssl), request_(request), remote_(std::move(remote)), local_(std::move(local)),
        remote_port_(remote_port), local_port_(local_port), write_timeout_ms_(write_timeout_ms) {}

  bool is_readable() const override { return pos_ < request_.size(); }
  bool is_writable() const override {
    if (failed_) return false;
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, write_timeout_ms_) > 0 && !(p.revents & (POLLERR | POLLHUP | POLLNVAL));
  }
  ssize_t read(char* ptr, size_t size) override {
    size_t n = std::min(size, request_.size() - pos_);
    std::memcpy(ptr, request_.data() + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }
  ssize_t write(const char* ptr, size_t size) override {
    if (failed_ || !write_all(fd_, ssl_, ptr, size, write_timeout_ms_)) {
      failed_ = true;
      return -1;
    }
    return static_cast<ssize_t>(size);
  }
  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    ip = remote_;
    port = remote_port_;
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    ip = local_;
    port = local_port_;
  }
  socket_t socket() const override { return fd_; }
  bool failed() const { return failed_; }

 private:
  int fd_;
  SSL* ssl_;
  const std::string& request_;
  size_t pos_ = 0;
  std::string remote_, local_;
  int remote_port_, local_port_, write_timeout_ms_;
  bool failed_ = false;
};

}  // namespace

std::string RequestHead::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return v;
  return "";
}

bool RequestHead::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(), [&](const auto& h) { return iequals(h.first, name); });
}

Verdict Verdict::admit(size_t max_body, std::any context) {
  Verdict v;
  v.max_body = max_body;
  v.context = std::move(context);
  return v;
}

Verdict Verdict::refuse(int status, std::string body, std::string content_type) {
  Verdict v;
  v.status = status;
  v.body = std::move(body);
  v.content_type = std::move(content_type);
  return v;
}

// One accepted connection. Owned by the loop (conns_) or by the queues between the loop
// and the workers; one thread at a time touches it.
struct BoundedHttpServer::Conn {
  enum class Phase { Handshake, Head, Admit, Body, Process, Linger, Closed };
  int fd = -1;
  SSL* ssl = nullptr;        // HTTPS: this connection's TLS state (owned)
  bool want_write = false;   // the handshake waits to write
  std::string client, local;
  int client_port = 0, local_port = 0;
  Phase phase = Phase::Head;
  Clock::time_point deadline;
  bool head_started = false;
  std::string in;  // received, not consumed; at most one head (+ one read) or body chunk
  RequestHead head;
  // Framing of the current request.
  bool chunked = false;
  bool expect_continue = false;
  bool has_length = false;
  uint64_t length = 0;
  size_t max_body = 0;
  std::any context;
  std::string body;
  enum class Chunk { Size, Data, DataEnd, Trailer } chunk = Chunk::Size;
  uint64_t chunk_left = 0;
  size_t trailer_bytes = 0, trailer_lines = 0;
  // After the request.
  bool close_after = false;
  size_t served = 0;
  std::string out;  // a refusal not yet written (Linger)
  size_t lingered = 0;

  ~Conn() {
    if (ssl) SSL_free(ssl);
  }

  void reset_request() {
    head = RequestHead{};
    chunked = expect_continue = has_length = false;
    length = 0;
    max_body = 0;
    context.reset();
    std::string().swap(body);
    chunk = Chunk::Size;
    chunk_left = 0;
    trailer_bytes = trailer_lines = 0;
    head_started = !in.empty();
  }
};

BoundedHttpServer::BoundedHttpServer(Limits limits) : limits_(limits) {
  svr_sock_ = INVALID_SOCKET;
  set_payload_max_length(limits_.max_body);  // a second fence; bodies are checked before
  set_keep_alive_max_count(limits_.max_requests_per_connection);
  set_keep_alive_timeout(std::max(1, limits_.idle_timeout_ms / 1000));
}

BoundedHttpServer::~BoundedHttpServer() { stop(); }

bool BoundedHttpServer::process_and_close_socket(socket_t sock) {
  ::close(sock);  // httplib's own accept loop is never started
  return false;
}

const std::any& BoundedHttpServer::admitted() {
  static const std::any kNone;
  return t_admitted ? *t_admitted : kNone;
}

Stats BoundedHttpServer::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

std::string BoundedHttpServer::refusal(int status, const std::string& message) const {
  if (refusal_body_) return refusal_body_(status, message);
  return nlohmann::json{{"error", message}}.dump();
}

int BoundedHttpServer::bind(const std::string& host, int port) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  std::string service = std::to_string(port);
  if (int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &res); rc != 0) {
    throw Error(fmt::format("cannot listen on {}:{}: {} (give a numeric address or a resolvable name)", host, port,
                            gai_strerror(rc)));
  }
  std::string why = "no address";
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) continue;
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && ::listen(fd, 1024) == 0) {
      listen_fd_ = fd;
      break;
    }
    why = std::strerror(errno);
    ::close(fd);
  }
  ::freeaddrinfo(res);
  if (listen_fd_ < 0) throw Error(fmt::format("cannot listen on {}:{}: {}", host, port, why));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  return socket_address(ss).second;
}

void BoundedHttpServer::start() {
  if (listen_fd_ < 0) throw Error("BoundedHttpServer::start() before bind()");
  if (::pipe2(wake_, O_NONBLOCK | O_CLOEXEC) != 0) throw Error(fmt::format("pipe: {}", std::strerror(errno)));
  svr_sock_ = listen_fd_;  // httplib ends event streams when this becomes INVALID_SOCKET
  if (tls_) ::signal(SIGPIPE, SIG_IGN);  // OpenSSL writes with write(), not send(MSG_NOSIGNAL)
  started_ = true;
  for (int i = 0; i < std::max(1, limits_.threads); ++i) workers_.emplace_back([this] { worker(); });
  loop_thread_ = std::thread([this] { loop(); });
}

void BoundedHttpServer::stop() {
  if (!started_) {
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    return;
  }
  started_ = false;
  stopping_ = true;
  svr_sock_ = INVALID_SOCKET;
  (void)!::write(wake_[1], "x", 1);
  if (loop_thread_.joinable()) loop_thread_.join();
  {
    std::lock_guard lock(mu_);
    for (int fd : busy_) ::shutdown(fd, SHUT_RDWR);  // answers being written end now
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
  for (auto* q : {&ready_, &returned_})
    for (auto& c : *q) ::close(c->fd);
  ready_.clear();
  returned_.clear();
  ::close(wake_[0]);
  ::close(wake_[1]);
}

// ---- the loop: accepting, reading, checking -------------------------------------------

void BoundedHttpServer::loop() {
  std::vector<pollfd> fds;
  Clock::time_point accept_paused_until{};
  while (!stopping_) {
    take_returned();
    hand_off();
    auto now = Clock::now();
    fds.clear();
    bool accepting = now >= accept_paused_until;
    fds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});
    fds.push_back({wake_[0], POLLIN, 0});
    auto next = now + std::chrono::seconds(1);
    size_t n = conns_.size();
    for (auto& c : conns_) {
      short ev = POLLIN;
      if (c->phase == Conn::Phase::Linger && !c->out.empty()) ev |= POLLOUT;
      if (c->phase == Conn::Phase::Handshake && c->want_write) ev = POLLOUT;
      fds.push_back({c->fd, ev, 0});
      next = std::min(next, c->deadline);
      // Bytes TLS already decrypted are not in the socket: poll would not report them.
      if (c->ssl && c->phase != Conn::Phase::Handshake && SSL_pending(c->ssl) > 0) next = now;
    }
    if (!accepting) next = std::min(next, accept_paused_until);
    int timeout = static_cast<int>(
        std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1));
    int r = ::poll(fds.data(), fds.size(), timeout);
    if (r < 0 && errno != EINTR) {
      log::error("HTTP server: poll failed: {}", std::strerror(errno));
      break;
    }
    if (fds[1].revents) {
      char buf[64];
      while (::read(wake_[0], buf, sizeof buf) > 0) {
      }
    }
    if ((fds[0].revents & POLLIN) && accept_all())
      accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
    now = Clock::now();
    for (size_t i = 0; i < n; ++i) {
      Conn& c = *conns_[i];
      short rev = fds[i + 2].revents;
      if (c.ssl && c.phase != Conn::Phase::Handshake && SSL_pending(c.ssl) > 0) rev |= POLLIN;
      if (c.phase == Conn::Phase::Linger) {
        if (rev) on_linger(c, rev);
      } else if (c.phase == Conn::Phase::Handshake) {
        if (rev) on_handshake(c);
      } else if (rev & (POLLIN | POLLHUP | POLLERR)) {
        on_readable(c);
      }
      if (c.phase != Conn::Phase::Closed && c.phase != Conn::Phase::Admit && c.phase != Conn::Phase::Process &&
          Clock::now() >= c.deadline) {
        on_deadline(c);
      }
    }
    hand_off();
  }
  for (auto& c : conns_) ::close(c->fd);
  conns_.clear();
  ::close(listen_fd_);
  listen_fd_ = -1;
}

// Complete heads and bodies go to the workers; closed connections are dropped.
void BoundedHttpServer::hand_off() {
  std::vector<ConnPtr> keep, to_work;
  keep.reserve(conns_.size());
  for (auto& c : conns_) {
    if (c->phase == Conn::Phase::Closed) continue;
    if (c->phase == Conn::Phase::Admit || c->phase == Conn::Phase::Process) to_work.push_back(std::move(c));
    else keep.push_back(std::move(c));
  }
  conns_ = std::move(keep);
  if (to_work.empty()) return;
  std::lock_guard lock(mu_);
  for (auto& c : to_work) ready_.push_back(std::move(c));
  if (to_work.size() == 1) work_cv_.notify_one();
  else work_cv_.notify_all();
}

// Accepts what is waiting, within the connection caps. True when out of descriptors.
bool BoundedHttpServer::accept_all() {
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR) continue;
      if (errno != EMFILE && errno != ENFILE) return false;
      log::warn("HTTP server: out of file descriptors; accepting again in 100 ms");
      return true;
    }
    auto [client, port] = socket_address(ss);
    std::string refusal_msg;
    {
      std::lock_guard lock(mu_);
      size_t& mine = per_client_[client];
      if (open_ >= limits_.max_connections) {
        refusal_msg = fmt::format("the server has {} connections open, its limit: retry later", open_);
      } else if (mine >= limits_.max_connections_per_client) {
        refusal_msg = fmt::format("{} has {} connections open, the limit per client: close idle ones or retry later",
                                  client, mine);
      }
      if (refusal_msg.empty()) {
        ++mine;
        ++open_;
        stats_.accepted++;
      } else {
        if (mine == 0) per_client_.erase(client);
        stats_.refused_at_accept++;
      }
    }
    if (!refusal_msg.empty()) {
      if (!tls_) {  // an HTTPS client could not read a plain answer, and a handshake costs CPU
        std::string a = closing_answer(503, refusal(503, refusal_msg), "application/json", {{"Retry-After", "1"}});
        (void)!::send(fd, a.data(), a.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      }
      ::close(fd);
      continue;
    }
    int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->client = client;
    c->client_port = port;
    sockaddr_storage ls{};
    socklen_t llen = sizeof ls;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ls), &llen);
    std::tie(c->local, c->local_port) = socket_address(ls);
    c->deadline = Clock::now() + std::chrono::milliseconds(limits_.idle_timeout_ms);
    if (tls_) {
      c->ssl = SSL_new(tls_->ctx());
      if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
        log::error("HTTPS server: cannot start TLS on a connection from {} (out of memory?)", client);
        close_conn(*c);
        continue;
      }
      SSL_set_accept_state(c->ssl);
      c->phase = Conn::Phase::Handshake;
      c->deadline = Clock::now() + std::chrono::milliseconds(limits_.handshake_timeout_ms);
    }
    conns_.push_back(std::move(c));
  }
}

// Connections the workers are done with: the next request, the body, a lingering close.
void BoundedHttpServer::take_returned() {
  std::vector<ConnPtr> back;
  {
    std::lock_guard lock(mu_);
    back.swap(returned_);
  }
  auto now = Clock::now();
  for (auto& c : back) {
    if (c->phase == Conn::Phase::Closed) continue;  // the worker closed it
    if (c->phase == Conn::Phase::Head) {
      c->deadline = now + std::chrono::milliseconds(c->head_started ? limits_.head_timeout_ms : limits_.idle_timeout_ms);
    } else if (c->phase == Conn::Phase::Body) {
      c->deadline = now + std::chrono::milliseconds(limits_.body_timeout_ms);
    } else if (c->phase == Conn::Phase::Linger) {
      c->deadline = now + std::chrono::milliseconds(kLingerMs);
    }
    Conn& ref = *c;
    conns_.push_back(std::move(c));
    if (ref.phase == Conn::Phase::Head || ref.phase == Conn::Phase::Body) advance(ref);
  }
}

void BoundedHttpServer::on_readable(Conn& c) {
  char buf[kReadChunk];
  size_t want = sizeof buf;
  if (c.phase == Conn::Phase::Body && !c.chunked) {
    uint64_t need = c.length > c.in.size() ? c.length - c.in.size() : 0;
    want = static_cast<size_t>(std::min<uint64_t>(want, need));
    if (want == 0) return;  // already buffered; advance() takes it
  }
  ssize_t n = io_read(c.fd, c.ssl, buf, want);
  if (n == kWouldBlock) return;
  if (n <= 0) {  // the peer left, perhaps in the middle of a request: nobody to answer
    close_conn(c);
    return;
  }
  c.in.append(buf, static_cast<size_t>(n));
  if (c.phase == Conn::Phase::Head && !c.head_started) {
    c.head_started = true;
    c.deadline = Clock::now() + std::chrono::milliseconds(limits_.head_timeout_ms);
  }
  advance(c);
}

void BoundedHttpServer::on_deadline(Conn& c) {
  {
    std::lock_guard lock(mu_);
    stats_.timed_out++;
  }
  if (c.phase == Conn::Phase::Handshake) close_conn(c);  // no TLS yet: nothing can be said
  else if (c.phase == Conn::Phase::Head && !c.head_started) close_conn(c);  // idle: no answer owed
  else if (c.phase == Conn::Phase::Head)
    refuse(c, 408, fmt::format("the request's head did not arrive within {} ms", limits_.head_timeout_ms));
  else if (c.phase == Conn::Phase::Body)
    refuse(c, 408, fmt::format("the request's body did not arrive within {} ms", limits_.body_timeout_ms));
  else close_conn(c);  // Linger
}

void BoundedHttpServer::advance(Conn& c) {
  if (c.phase == Conn::Phase::Head) {
    if (!parse_head(c) || !check_framing(c)) return;
    c.phase = Conn::Phase::Admit;  // to a worker: admission
    return;
  }
  if (c.phase == Conn::Phase::Body && read_body(c)) c.phase = Conn::Phase::Process;
}

// True when a whole head was parsed into c.head (and consumed from c.in); false when
// more is needed or the request was refused.
bool BoundedHttpServer::parse_head(Conn& c) {
  while (c.in.size() >= 2 && c.in[0] == '\r' && c.in[1] == '\n') c.in.erase(0, 2);  // RFC 9112 2.2
  size_t eol = c.in.find("\r\n");
  if ((eol == std::string::npos ? c.in.size() : eol) > limits_.max_request_line) {
    refuse(c, 414, fmt::format("the request line is longer than {} bytes", limits_.max_request_line));
    return false;
  }
  size_t end = c.in.find("\r\n\r\n");
  if ((end == std::string::npos ? c.in.size() : end + 4) > limits_.max_header_bytes) {
    refuse(c, 431, fmt::format("the request's head is larger than {} bytes", limits_.max_header_bytes));
    return false;
  }
  if (end == std::string::npos) return false;
  std::string_view text(c.in.data(), end + 2);  // every line with its CRLF
  RequestHead h;
  h.client = c.client;
  // Request line: METHOD SP target SP version.
  std::string_view line = text.substr(0, eol);
  size_t s1 = line.find(' '), s2 = s1 == std::string_view::npos ? s1 : line.find(' ', s1 + 1);
  if (s2 == std::string_view::npos || line.find(' ', s2 + 1) != std::string_view::npos) {
    refuse(c, 400, "malformed request line (METHOD /path HTTP/1.1)");
    return false;
  }
  h.method = std::string(line.substr(0, s1));
  h.target = std::string(line.substr(s1 + 1, s2 - s1 - 1));
  h.version = std::string(line.substr(s2 + 1));
  bool target_ok = !h.target.empty() && h.target[0] == '/' &&
                   std::none_of(h.target.begin(), h.target.end(),
                                [](char ch) { return static_cast<unsigned char>(ch) <= 0x20 || ch == 0x7f; });
  if (!is_token(h.method) || !target_ok) {
    refuse(c, 400, "malformed request line (METHOD /path HTTP/1.1)");
    return false;
  }
  if (h.version != "HTTP/1.1" && h.version != "HTTP/1.0") {
    refuse(c, 505, fmt::format("{} is not supported: use HTTP/1.1", h.version.substr(0, 16)));
    return false;
  }
  // Header lines: name ":" OWS value OWS.
  for (size_t pos = eol + 2; pos < text.size();) {
    size_t e = text.find("\r\n", pos);
    std::string_view hl = text.substr(pos, e - pos);
    pos = e + 2;
    if (hl.size() > limits_.max_header_line) {
      refuse(c, 431, fmt::format("a header line is longer than {} bytes", limits_.max_header_line));
      return false;
    }
    if (h.headers.size() >= limits_.max_headers) {
      refuse(c, 431, fmt::format("the request has more than {} header lines", limits_.max_headers));
      return false;
    }
    size_t colon = hl.find(':');
    if (colon == std::string_view::npos || !is_token(hl.substr(0, colon))) {
      refuse(c, 400, "malformed header line (Name: value; no folding, no space before the colon)");
      return false;
    }
    std::string_view value = trim_ows(hl.substr(colon + 1));
    if (std::any_of(value.begin(), value.end(), [](char ch) { return ch == '\r' || ch == '\n' || ch == '\0'; })) {
      refuse(c, 400, "a header value holds a bare CR, LF or NUL");
      return false;
    }
    h.headers.emplace_back(std::string(hl.substr(0, colon)), std::string(value));
  }
  size_t q = h.target.find('?');
  h.path = httplib::detail::decode_url(h.target.substr(0, q), false);
  c.in.erase(0, end + 4);
  c.head = std::move(h);
  return true;
}

// The body's framing, from the head alone. False when refused.
bool BoundedHttpServer::check_framing(Conn& c) {
  const RequestHead& h = c.head;
  std::vector<std::string> lengths, encodings;
  std::string te, ce;
  for (const auto& [k, v] : h.headers) {
    if (iequals(k, "Content-Length")) lengths.push_back(v);
    else if (iequals(k, "Transfer-Encoding")) te += (te.empty() ? "" : ",") + v;
    else if (iequals(k, "Content-Encoding")) ce += (ce.empty() ? "" : ",") + v;
  }
  if (!ce.empty() && !iequals(ce, "identity")) {
    linger(c, closing_answer(415,
                             refusal(415, fmt::format("compressed request bodies are not accepted (Content-Encoding: "
                                                      "{}): send the body uncompressed",
                                                      ce.substr(0, 64))),
                             "application/json", {{"Accept-Encoding", "identity"}}));
    return false;
  }
  if (!te.empty()) {
    if (!lengths.empty() || h.version == "HTTP/1.0") {
      refuse(c, 400, "Transfer-Encoding with Content-Length (or in HTTP/1.0) is ambiguous: send one of them");
      return false;
    }
    if (!iequals(trim_ows(te), "chunked")) {
      refuse(c, 501, fmt::format("Transfer-Encoding {} is not supported: send chunked or a Content-Length",
                                 te.substr(0, 64)));
      return false;
    }
    c.chunked = true;
  }
  for (const auto& l : lengths) {
    bool digits = !l.empty() && std::all_of(l.begin(), l.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
    if (!digits || l != lengths.front()) {
      refuse(c, 400, "Content-Length must be one decimal number");
      return false;
    }
  }
  if (!lengths.empty()) {
    c.has_length = true;
    // Longer than 18 digits is over any limit: keep it as the largest value.
    c.length = lengths.front().size() > 18 ? UINT64_MAX : std::stoull(lengths.front());
  }
  std::string expect = h.header("Expect");
  if (!expect.empty()) {
    if (!iequals(expect, "100-continue")) {
      refuse(c, 417, "only Expect: 100-continue is supported");
      return false;
    }
    c.expect_continue = h.version == "HTTP/1.1";
  }
  std::string conn = lowered(h.header("Connection"));
  if (conn.find("close") != std::string::npos || (h.version == "HTTP/1.0" && conn.find("keep-alive") == std::string::npos))
    c.close_after = true;
  return true;
}

// True when the whole body is in c.body; false when more is needed or it was refused.
bool BoundedHttpServer::read_body(Conn& c) {
  if (!c.chunked) {
    if (c.in.size() < c.length) return false;
    c.body = c.in.substr(0, c.length);
    c.in.erase(0, c.length);
    return true;
  }
  for (;;) {
    switch (c.chunk) {
      case Conn::Chunk::Size: {
        size_t eol = c.in.find("\r\n");
        if (eol == std::string::npos) {
          if (c.in.size() > kChunkLineMax) refuse(c, 400, "a chunk-size line of the chunked body is too long");
          return false;
        }
        std::string_view line(c.in.data(), std::min(eol, c.in.find(';')));
        line = trim_ows(line);
        if (line.empty() || line.size() > 15 || !std::all_of(line.begin(), line.end(), [](char ch) {
              return std::isxdigit(static_cast<unsigned char>(ch));
            })) {
          refuse(c, 400, "malformed chunk size in the chunked body");
          return false;
        }
        uint64_t size = std::stoull(std::string(line), nullptr, 16);
        if (c.body.size() + size > c.max_body) {
          refuse(c, 413, fmt::format("request body larger than {} bytes", c.max_body));
          return false;
        }
        c.in.erase(0, eol + 2);
        c.chunk_left = size;
        c.chunk = size == 0 ? Conn::Chunk::Trailer : Conn::Chunk::Data;
        break;
      }
      case Conn::Chunk::Data: {
        size_t take = static_cast<size_t>(std::min<uint64_t>(c.chunk_left, c.in.size()));
        c.body.append(c.in, 0, take);
        c.in.erase(0, take);
        c.chunk_left -= take;
        if (c.chunk_left > 0) return false;
        c.chunk = Conn::Chunk::DataEnd;
        break;
      }
      case Conn::Chunk::DataEnd:
        if (c.in.size() < 2) return false;
        if (c.in.compare(0, 2, "\r\n") != 0) {
          refuse(c, 400, "a chunk of the chunked body does not end with CRLF");
          return false;
        }
        c.in.erase(0, 2);
        c.chunk = Conn::Chunk::Size;
        break;
      case Conn::Chunk::Trailer: {  // trailer fields are read within the head's limits, then dropped
        size_t eol = c.in.find("\r\n");
        if (eol == std::string::npos) {
          if (c.in.size() > limits_.max_header_line) refuse(c, 431, "a trailer line is too long");
          return false;
        }
        c.trailer_bytes += eol + 2;
        c.in.erase(0, eol + 2);
        if (eol == 0) return true;
        if (++c.trailer_lines > limits_.max_headers || c.trailer_bytes > limits_.max_header_bytes) {
          refuse(c, 431, "the chunked body's trailer is too large");
          return false;
        }
        break;
      }
    }
  }
}

void BoundedHttpServer::refuse(Conn& c, int status, const std::string& message) {
  linger(c, closing_answer(status, refusal(status, message), "application/json", {}));
}

// Sends a refusal, shuts the write side and waits (bounded) for the peer to read it and
// close, so that the answer is not lost to a reset; what the peer sends meanwhile is
// dropped unread.
void BoundedHttpServer::linger(Conn& c, std::string answer) {
  {
    std::lock_guard lock(mu_);
    stats_.refused++;
  }
  std::string().swap(c.in);
  c.reset_request();
  c.out = std::move(answer);
  ssize_t n = io_write_some(c.fd, c.ssl, c.out.data(), c.out.size());
  if (n > 0) c.out.erase(0, static_cast<size_t>(n));
  if (c.out.empty()) shutdown_write(c.fd, c.ssl);
  c.phase = Conn::Phase::Linger;
  c.deadline = Clock::now() + std::chrono::milliseconds(kLingerMs);
}

void BoundedHttpServer::on_linger(Conn& c, short revents) {
  if ((revents & POLLOUT) && !c.out.empty()) {
    ssize_t n = io_write_some(c.fd, c.ssl, c.out.data(), c.out.size());
    if (n > 0) c.out.erase(0, static_cast<size_t>(n));
    else if (n == kFailed) return close_conn(c);
    if (c.out.empty()) shutdown_write(c.fd, c.ssl);
  }
  if (revents & (POLLIN | POLLHUP | POLLERR)) {
    static thread_local char scratch[kReadChunk];
    ssize_t n = io_read(c.fd, c.ssl, scratch, sizeof scratch);
    if (n == kWouldBlock) return;
    if (n <= 0) return close_conn(c);
    c.lingered += static_cast<size_t>(n);
    if (c.lingered > kLingerMaxBytes) close_conn(c);
  }
}

// The TLS handshake, a step at a time as bytes arrive; then the connection waits for its
// first request like a plain one. A client that speaks plain HTTP here (its first byte is
// not a TLS handshake record) gets a plain 400 that names https://.
void BoundedHttpServer::on_handshake(Conn& c) {
  if (!c.head_started) {
    unsigned char first = 0;
    ssize_t n = ::recv(c.fd, &first, 1, MSG_PEEK);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return close_conn(c);
    if (n == 1) {
      c.head_started = true;  // here: the first byte was looked at
      if (first != 0x16) {    // a TLS record of type handshake starts with 22
        SSL_free(c.ssl);
        c.ssl = nullptr;
        refuse(c, 400, "this port speaks HTTPS only: use https:// (and the OMA's certificate fingerprint or CA)");
        return;
      }
    }
  }
  ERR_clear_error();
  int r = SSL_do_handshake(c.ssl);
  if (r == 1) {
    c.head_started = false;
    c.want_write = false;
    c.phase = Conn::Phase::Head;
    c.deadline = Clock::now() + std::chrono::milliseconds(limits_.idle_timeout_ms);
    return;
  }
  int e = SSL_get_error(c.ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    c.want_write = e == SSL_ERROR_WANT_WRITE;
    return;
  }
  unsigned long detail = ERR_peek_error();
  log::debug("HTTPS: TLS handshake with {} failed: {}", c.client,
             detail ? ERR_reason_error_string(detail) ? ERR_reason_error_string(detail) : "?" : "connection closed");
  ERR_clear_error();
  {
    std::lock_guard lock(mu_);
    stats_.refused++;
  }
  close_conn(c);
}

void BoundedHttpServer::close_conn(Conn& c) {
  if (c.fd >= 0) {
    ::close(c.fd);
    c.fd = -1;
    std::lock_guard lock(mu_);
    if (auto it = per_client_.find(c.client); it != per_client_.end() && --it->second == 0) per_client_.erase(it);
    --open_;
  }
  c.phase = Conn::Phase::Closed;
}

// ---- the workers: admission and processing ----------------------------------------

void BoundedHttpServer::worker() {
  for (;;) {
    ConnPtr c;
    {
      std::unique_lock lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !ready_.empty(); });
      if (stopping_) return;
      c = std::move(ready_.front());
      ready_.erase(ready_.begin());
      busy_.push_back(c->fd);
    }
    int fd = c->fd;
    if (c->phase == Conn::Phase::Admit) admit(*c);
    if (c->phase == Conn::Phase::Process) process(*c);
    {
      std::lock_guard lock(mu_);
      busy_.erase(std::find(busy_.begin(), busy_.end(), fd));
    }
    if (c->phase == Conn::Phase::Closed) close_conn(*c);  // now: the peer may already be reconnecting
    std::lock_guard lock(mu_);
    returned_.push_back(std::move(c));
    (void)!::write(wake_[1], "x", 1);
  }
}

// Decides the request from its head; leaves c in Linger (refused), Body (to read) or
// Process.
void BoundedHttpServer::admit(Conn& c) {
  Verdict v;
  try {
    v = admission_ ? admission_(c.head) : Verdict::admit(limits_.max_body);
  } catch (const std::exception& e) {
    log::error("HTTP {} {}: the admission failed: {}", c.head.method, c.head.path, e.what());
    v = Verdict::refuse(500, refusal(500, e.what()));
  }
  std::string answer;
  if (v.status != 0) {
    answer = closing_answer(v.status, v.body, v.content_type, v.headers);
  } else if (c.has_length && c.length > v.max_body) {
    answer = closing_answer(413, refusal(413, fmt::format("request body larger than {} bytes", v.max_body)),
                            "application/json", {});
  }
  if (!answer.empty()) {
    {
      std::lock_guard lock(mu_);
      stats_.refused++;
    }
    std::string().swap(c.in);
    c.reset_request();
    bool sent = write_all(c.fd, c.ssl, answer.data(), answer.size(), limits_.write_timeout_ms);
    if (!sent) {
      c.phase = Conn::Phase::Closed;
      return;
    }
    shutdown_write(c.fd, c.ssl);
    c.phase = Conn::Phase::Linger;
    return;
  }
  c.max_body = v.max_body;
  c.context = std::move(v.context);
  bool has_body = c.chunked || c.length > 0;
  if (!has_body) {
    c.phase = Conn::Phase::Process;
    return;
  }
  if (c.expect_continue) {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!write_all(c.fd, c.ssl, kContinue, sizeof kContinue - 1, limits_.write_timeout_ms)) {
      c.phase = Conn::Phase::Closed;
      return;
    }
  }
  c.phase = Conn::Phase::Body;
}

// Runs httplib's routing and handlers on the request, re-framed with a Content-Length,
// and writes the answer. Leaves c in Head (keep-alive) or Closed.
void BoundedHttpServer::process(Conn& c) {
  static const char* const kDropped[] = {"Transfer-Encoding", "Content-Length", "Expect",     "Content-Encoding",
                                         "REMOTE_ADDR",       "REMOTE_PORT",    "LOCAL_ADDR", "LOCAL_PORT"};
  std::string request = c.head.method + " " + c.head.target + " " + c.head.version + "\r\n";
  for (const auto& [k, v] : c.head.headers) {
    const std::string& name = k;  // clang 14 (the fuzz build) cannot capture a structured binding
    if (std::none_of(std::begin(kDropped), std::end(kDropped), [&](const char* d) { return iequals(name, d); }))
      request += k + ": " + v + "\r\n";
  }
  request += fmt::format("Content-Length: {}\r\n\r\n", c.body.size());
  request += c.body;
  std::string().swap(c.body);

  bool closing = c.close_after || stopping_ || ++c.served >= limits_.max_requests_per_connection;
  bool connection_closed = false;
  RequestStream strm(c.fd, c.ssl, request, c.client, c.client_port, c.local, c.local_port, limits_.write_timeout_ms);
  t_admitted = &c.context;
  bool ok = false;
  try {
    ok = process_request(strm, closing, connection_closed, nullptr);
  } catch (const std::exception& e) {
    log::error("HTTP {} {}: {}", c.head.method, c.head.path, e.what());
  }
  t_admitted = nullptr;
  {
    std::lock_guard lock(mu_);
    stats_.processed++;
  }
  if (!ok || closing || connection_closed || strm.failed()) {
    c.phase = Conn::Phase::Closed;
    return;
  }
  c.reset_request();
  c.phase = Conn::Phase::Head;
}

}  // namespace mk::http
