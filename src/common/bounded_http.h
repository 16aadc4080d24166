// BoundedHttpServer: an HTTP/1.1 listener whose every way in is bounded before memory
// grows, in front of cpp-httplib's request processing (routing, handlers, static files,
// error replies), for the OMA's API and GUI listeners and the VMA's API.
//
// Why a front layer: Debian 12's cpp-httplib 0.11.4 reads chunked bodies past
// set_payload_max_length (CVE-2025-46728), reads request lines and headers without
// length or count limits (CVE-2025-53628, CVE-2025-52887), inflates gzip/brotli request
// bodies, and gives every connection, slow or idle, a worker thread for its whole life.
// So httplib never sees a socket here. One event-loop thread accepts, reads and checks
// each request itself, with fixed limits and deadlines, and a worker runs httplib's
// process_request() only on a request that is complete and in memory, re-framed with a
// Content-Length. Why not libmicrohttpd or Boost.Beast: every route, the GUI's static
// files and the event stream are written against httplib's Request/Response; this layer
// is ~600 lines and keeps them as they are (see docs/security.md).
//
// What each request goes through, in order, on the loop thread (no worker is taken):
//   1. Connection caps at accept: at most `max_connections` in all and
//      `max_connections_per_client` per peer address, else 503 and close.
//   2. The head (request line and headers) within `head_timeout_ms` of its first byte
//      (or of the connection / the previous answer: `idle_timeout_ms`), at most
//      `max_request_line` bytes for the request line (414), `max_header_line` per header
//      line, `max_header_bytes` in all and `max_headers` lines (431); malformed 400.
//   3. Framing: Content-Encoding other than identity 415, Transfer-Encoding other than
//      chunked 501, both Content-Length and Transfer-Encoding (or two lengths) 400.
//   4. Admission, on a worker (it may query the database; the head is complete, so the
//      worker waits for nobody): the owner's Admission decides from the head alone
//      (route, bearer token, role) and may refuse (401, 403, 404, ...); a Content-Length
//      over the admitted limit is 413. Nothing of the body has been read yet.
//   5. The body, back on the loop: at most the admitted limit, within `body_timeout_ms`;
//      a chunked body is decoded here with bounded chunk-size lines and trailers and
//      refused (413) as soon as it passes the limit.
//   6. A worker processes the request (httplib routing and handlers) from memory and
//      writes the answer (each write within `write_timeout_ms`). The connection then goes
//      back to the loop for the next request (keep-alive), or is closed.
// A refused request gets a small JSON answer with "Connection: close"; the write side is
// shut down, then the connection is closed once the peer has read it (at most 2 s, and
// whatever the peer still sends meanwhile is dropped unread into a fixed scratch buffer).
//
// So an unauthenticated request costs at most one connection's head buffer
// (max_header_bytes + one 16 KiB read) and never a worker thread.
//
// HTTPS (set_tls()): the TLS handshake is step 0, done by the loop without blocking,
// within `handshake_timeout_ms` of the accept (else the connection is closed), so a slow
// or silent TLS client holds a descriptor and a TLS state, never a worker; every limit
// above then applies to the decrypted stream, as it would to plain HTTP. A client that
// speaks plain HTTP to an HTTPS listener gets a plain 400 naming https:// and is closed.
//
// Ownership and threads: owns its listening socket, its loop thread, its worker threads
// and every accepted connection. Declare handlers on handlers() and set the admission
// before start(); start() and stop() from one thread. Handlers run on worker threads,
// many at once; so does the admission.
#pragma once

#include <httplib.h>

#include <any>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/tls.h"

namespace mk::http {

struct Limits {
  size_t max_request_line = 8 * 1024;   // bytes, without CRLF (414)
  size_t max_header_line = 8 * 1024;    // bytes per header line (431)
  size_t max_header_bytes = 16 * 1024;  // the whole head (431)
  size_t max_headers = 64;              // header lines (431)
  size_t max_body = 64 * 1024;          // when the admission does not say (413)
  int head_timeout_ms = 10000;          // whole head, from its first byte (408)
  int idle_timeout_ms = 5000;           // before the first byte of a request
  int body_timeout_ms = 30000;          // whole body, from the end of the head (408)
  int write_timeout_ms = 10000;         // each write of an answer
  size_t max_connections = 512;         // in all (503)
  size_t max_connections_per_client = 128;  // per peer address (503)
  int handshake_timeout_ms = 5000;      // HTTPS: the TLS handshake, from the accept (closed)
  int threads = 16;                     // workers running handlers
  size_t max_requests_per_connection = 1000;
};

// A request's head as the admission sees it.
struct RequestHead {
  std::string method;  // as sent ("GET")
  std::string target;  // as sent ("/api/v1/vms?x=1")
  std::string path;    // the target without the query, percent-decoded
  std::string version; // "HTTP/1.1" or "HTTP/1.0"
  std::vector<std::pair<std::string, std::string>> headers;  // in order, values trimmed
  std::string client;  // the peer's address

  // The first header of that name (case-insensitive), or "".
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

// The admission's answer: admitted with a body limit, or refused with an answer.
struct Verdict {
  int status = 0;  // 0: admitted
  size_t max_body = 0;
  // Kept for the worker that processes this request: see BoundedHttpServer::admitted().
  std::any context;
  // A refusal's answer (sent with Connection: close).
  std::string body;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;

  static Verdict admit(size_t max_body, std::any context = {});
  static Verdict refuse(int status, std::string body, std::string content_type = "application/json");
};

using Admission = std::function<Verdict(const RequestHead&)>;

// Counters for tests and logs; read with stats().
struct Stats {
  uint64_t accepted = 0, refused_at_accept = 0, refused = 0, timed_out = 0, processed = 0;
};

class BoundedHttpServer : private httplib::Server {
 public:
  explicit BoundedHttpServer(Limits limits);
  ~BoundedHttpServer() override;
  BoundedHttpServer(const BoundedHttpServer&) = delete;
  BoundedHttpServer& operator=(const BoundedHttpServer&) = delete;

  // Where handlers, mount points, the error, exception and post-routing handlers are
  // declared. Its listen, bind, timeout and thread-pool settings are not used: this
  // server does those. Before start().
  httplib::Server& handlers() { return *this; }
  // Decides each request from its head. Without one, every request is admitted with
  // limits().max_body. Before start().
  void set_admission(Admission admission) { admission_ = std::move(admission); }
  // Refusals' bodies for limit violations (413, 414, ...): given the status and a message
  // for a human; default {"error": message}.
  void set_refusal_body(std::function<std::string(int status, const std::string& message)> f) {
    refusal_body_ = std::move(f);
  }

  // Serves HTTPS with this certificate instead of plain HTTP. Before start().
  void set_tls(std::shared_ptr<const tls::TlsServerContext> tls) { tls_ = std::move(tls); }
  bool serves_tls() const { return tls_ != nullptr; }

  // Binds `host`:`port` (0: any free port) and returns the port. Throws mk::Error naming
  // the address when it cannot.
  int bind(const std::string& host, int port);
  // Starts the loop and the workers. After bind().
  void start();
  // Closes the listener and every connection (open answers, event streams included, end
  // at their next write), joins the threads. Idempotent.
  void stop();

  const Limits& limits() const { return limits_; }
  Stats stats() const;

  // The admission context of the request the calling worker thread is processing (empty
  // outside a handler): how a handler learns what the admission decided (the caller)
  // without deciding it again.
  static const std::any& admitted();

 private:
  struct Conn;
  using ConnPtr = std::unique_ptr<Conn>;

  bool process_and_close_socket(socket_t sock) override;  // unused: httplib never listens
  void loop();
  bool accept_all();
  void take_returned();
  void hand_off();
  void on_readable(Conn& c);
  void on_linger(Conn& c, short revents);
  void on_handshake(Conn& c);
  void on_deadline(Conn& c);
  void advance(Conn& c);  // parse what is buffered; may hand c to a worker
  bool parse_head(Conn& c);
  bool check_framing(Conn& c);
  bool read_body(Conn& c);
  void refuse(Conn& c, int status, const std::string& message);
  void linger(Conn& c, std::string answer);
  void close_conn(Conn& c);
  void worker();
  void admit(Conn& c);
  void process(Conn& c);
  std::string refusal(int status, const std::string& message) const;

  Limits limits_;
  std::shared_ptr<const tls::TlsServerContext> tls_;
  Admission admission_;
  std::function<std::string(int, const std::string&)> refusal_body_;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};  // pipe: workers and stop() wake the loop
  std::thread loop_thread_;
  std::vector<std::thread> workers_;
  std::atomic<bool> stopping_{false};
  bool started_ = false;

  // Loop-owned connections (reading, idle, lingering). Only the loop thread touches them.
  std::vector<ConnPtr> conns_;

  mutable std::mutex mu_;  // guards the queues, busy_, the counts and stats_
  std::map<std::string, size_t> per_client_;  // open connections per peer address
  size_t open_ = 0;
  std::condition_variable work_cv_;
  std::vector<ConnPtr> ready_;     // complete requests waiting for a worker
  std::vector<ConnPtr> returned_;  // served, back to the loop (keep-alive) or to close
  std::vector<int> busy_;          // fds a worker is writing to (stop() shuts them down)
  Stats stats_;
};

}  // namespace mk::http
