// ApiServer: the OMA's REST API (/api/v1, JSON), the one front door for the GUI, the
// CLI and scripts.
//
// The routes are declared in one file per resource (oma/api/routes/) as Route values;
// the ApiServer keeps them in its Router, checks the bearer token and the body, checks
// the parameters and the body before a handler runs and its reply after, and produces
// the OpenAPI document served at /api/v1/openapi.json from the same declarations, so the
// description cannot drift from the server. /health needs no token; every other route
// needs a live (not revoked) token of at least the role the route declares (route.h).
// Errors are JSON {"error": message, "field": name?} with 400 (bad input, naming the
// field), 401, 403, 404, 409, 413 (body over the limit) or 500.
//
// Every listener is a BoundedHttpServer (common/bounded_http.h): request line, headers,
// body (Content-Length or chunked; compressed bodies refused), slow clients and
// connections per client and in all are bounded before memory grows, and the route, the
// token and the role are decided from the request's head alone (admit()), before a byte
// of the body is read; a refused request's connection is closed. The handler learns the
// caller from that decision (BoundedHttpServer::admitted()), not by checking again.
//
// Owns the HTTP server and its threads; not its collaborators. Thread-safe once started
// (requests are served by worker threads; all handlers use thread-safe collaborators);
// add_routes() and serve_on() come before start().
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/bounded_http.h"
#include "oma/api/route.h"
#include "oma/api/router.h"
#include "oma/db/config_repository.h"

namespace mk::oma::api {

struct ApiConfig {
  std::string listen_address = "0.0.0.0";
  int port = 8082;               // 0: any free port (see port())
  // Request limits, timeouts, connection caps and worker threads (the default body limit
  // is 64 KiB); the GUI listener uses the same.
  http::Limits limits;
  // HTTPS with this certificate; null: plain HTTP (oma/https.h decides which).
  std::shared_ptr<const tls::TlsServerContext> tls;
  // A reply that does not match its route's declared response is logged; strict: it is
  // replaced by a 500 naming the mismatch (tests).
  bool strict_replies = false;
};

// The request's input as the ApiServer checks it before a route's handler runs: its
// path and query parameters against the route's declared parameters, and its body
// against the route's request schema. Returns the body (an object; null for a route
// without one). Throws FieldError naming the field at fault. Thread-safe.
nlohmann::json checked_input(const Route& r, const Request& req);

class ApiServer {
 public:
  // `tokens` holds the API tokens. The server declares GET /api/v1/openapi.json itself.
  ApiServer(ConfigRepository& tokens, ApiConfig config);
  ~ApiServer();

  // Adds routes to the one table (and the OpenAPI document). Throws mk::Error when a
  // route's path is malformed or ties with another (see router.h), or its declaration is
  // incomplete (see openapi.h). Call before start().
  void add_routes(std::vector<Route> routes);
  // Serves the same routes, admission and error replies on another listener (the GUI's),
  // so the GUI's origin has the very same API; its other paths (the GUI's files) are
  // admitted as GET/HEAD without a body. Call after the last add_routes().
  void serve_on(http::BoundedHttpServer& server);
  // Binds and starts serving on a background thread. Throws mk::Error if it cannot bind
  // or the OpenAPI document cannot be built (two operations with one operationId, ...).
  void start();
  void stop();
  int port() const { return port_; }

  const std::vector<Route>& routes() const { return router_.routes(); }
  const nlohmann::json& openapi() const { return document_; }

 private:
  void install(http::BoundedHttpServer& server, bool api_only);
  http::Verdict admit(const http::RequestHead& head);
  void handle(const httplib::Request& req, httplib::Response& res);
  std::optional<Reply> authorize(const Route& r, const std::string& authorization, Caller& caller);
  Reply dispatch(const Route& r, const Request& req, const Caller& caller);
  void check_reply(const Route& r, const httplib::Request& req, Reply& reply);
  void build_document();

  ConfigRepository& tokens_;
  ApiConfig config_;
  Router router_;
  nlohmann::json document_;  // built once, before the first listener serves
  http::BoundedHttpServer server_;
  int port_ = 0;
};

}  // namespace mk::oma::api
