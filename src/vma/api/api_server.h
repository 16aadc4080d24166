// ApiServer: the VMA's HTTP API, the server side of the OMA<->VMA protocol
// (src/protocol/messages.h): replicate, progress/{job}, stop/{job}, cleanup/{vm},
// power/{vm}, discover, preflight/{vm}, vms/{vm} (describe), health, service-nodes
// (the OMA nodes this VMA holds tunnels to).
//
// Every request must be signed with the token the OMA issued at pairing
// (protocol/request_auth.h: an HMAC of method, path, time, nonce and body; the token
// itself never travels); unsigned, wrongly signed, replayed (nonce seen) or too old
// requests are 401, and a body other than the signed one 401 too. Every answer to a
// signed request is signed in turn (MigrateKit-Answer-Mac), so that the OMA can tell
// this VMA from another process holding the tunnel's port. Then the request's protocol
// version (version.h) must be this VMA's: otherwise 426 naming both versions. Both are decided from the request's head, before a byte of
// its body is read, by the listener's admission: the listener is a BoundedHttpServer
// (common/bounded_http.h), as the OMA's, so request line, headers, body (chunked,
// compressed), slow clients and connections are bounded before memory grows. Bodies are decoded by the protocol module: bad input is 400
// {"error", "field"}; an unknown job or VM 404; cleanup of a VM that has an active job
// 423; vCenter failures 502; shutting down 503; everything else that fails 500 —
// always {"error": what failed, on which VM/disk, what to do}. Every answer carries the
// protocol version header.
//
// Progress can be long-polled (?after=R&wait_ms=N, protocol/messages.h): the worker
// waits in JobRunner::wait_for_change. At most half of the workers wait at once; a
// request beyond that is answered at once without a revision (the OMA then polls it).
// stop() ends every wait first.
//
// Owns the HTTP server and its threads, not the runner, vCenter or tunnel state
// provider. Thread-safe (requests are served by worker threads).
#pragma once

#include <algorithm>
#include <atomic>
#include <nlohmann/json.hpp>
#include <string>

#include "common/bounded_http.h"
#include "protocol/request_auth.h"

#include "vma/runner/job_runner.h"
#include "vma/tunnel_state.h"
#include "vma/vcenter/vcenter.h"

namespace mk::vma::api {

struct ApiOptions {
  std::string listen_address = "127.0.0.1";
  int port = 8081;        // 0: any free port (see port())
  std::string token;      // required
  std::string instance;   // this run's vma_instance
  http::Limits limits = vma_limits();  // body up to 1 MiB

  static http::Limits vma_limits() {
    http::Limits l;
    l.max_body = 1024 * 1024;
    return l;
  }
};

class ApiServer {
 public:
  ApiServer(ApiOptions options, JobRunner& runner, VCenter& vcenter, Tunnels tunnels);
  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Binds and serves in a thread; throws mk::Error when the address cannot be bound.
  void start();
  void stop();
  int port() const { return port_; }

 private:
  using Handler = std::function<void(const httplib::Request&, httplib::Response&)>;
  Handler guarded(std::function<nlohmann::json(const httplib::Request&, httplib::Response&)> handler);
  http::Verdict admit(const http::RequestHead& head);

  nlohmann::json replicate(const httplib::Request& req, httplib::Response& res);
  nlohmann::json progress(const httplib::Request& req, httplib::Response& res);
  nlohmann::json stop_job(const httplib::Request& req, httplib::Response& res);
  nlohmann::json cleanup(const httplib::Request& req, httplib::Response& res);
  nlohmann::json power(const httplib::Request& req, httplib::Response& res);
  nlohmann::json discover(const httplib::Request& req, httplib::Response& res);
  nlohmann::json preflight(const httplib::Request& req, httplib::Response& res);
  nlohmann::json describe(const httplib::Request& req, httplib::Response& res);
  nlohmann::json health(const httplib::Request& req, httplib::Response& res);
  nlohmann::json service_nodes(const httplib::Request& req, httplib::Response& res);

  ApiOptions options_;
  JobRunner& runner_;
  VCenter& vcenter_;
  Tunnels tunnels_;
  http::BoundedHttpServer server_;
  int port_ = 0;
  protocol::NonceCache nonces_;  // of the signed requests admitted lately (replays are refused)
  std::atomic<int> waiting_{0};  // progress requests held (long polls)
  int max_waiting() const { return std::max(1, options_.limits.threads / 2); }
};

}  // namespace mk::vma::api
