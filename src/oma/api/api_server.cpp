#include "oma/api/api_server.h"

#include <fmt/format.h>

#include "common/log.h"
#include "oma/api/checks.h"
#include "oma/api/openapi.h"
#include "oma/api/schemas.h"
#include "oma/crypto.h"
#include "oma/errors.h"

namespace mk::oma::api {

using nlohmann::json;

ApiServer::ApiServer(ConfigRepository& tokens, ApiConfig config) : tokens_(tokens), config_(std::move(config)) {
  prepare(server_);
  // cpp-httplib (as packaged) listens with a backlog of 5: a burst of pollers would
  // see dropped SYNs and one-second retransmits. Remember the socket to widen it.
  server_.set_socket_options([this](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    listen_fd_ = sock;
  });
  add_routes({{.method = "GET",
               .path = "/api/v1/openapi.json",
               .operation_id = "getOpenApiDocument",
               .tag = &kSystemTag,
               .summary = "This API's OpenAPI 3 description",
               .description = "The OpenAPI 3.0 document of every operation, generated from the same declarations "
                              "the server routes and checks requests and replies with.",
               .role = "viewer",
               .responses = {{200, "the document", &kOpenApiDocument}},
               .handler = [this](auto&, auto&, auto&) -> Reply { return {200, document_, ""}; }}});
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::prepare(httplib::Server& server) {
  server.new_task_queue = [n = config_.threads] { return new httplib::ThreadPool(n); };
  server.set_payload_max_length(config_.max_body_bytes);
  server.set_read_timeout(std::chrono::seconds(10));
  server.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 404   ? "no such route: see GET /api/v1/openapi.json"
                      : res.status == 413 ? "request body too large"
                                          : fmt::format("HTTP {}", res.status);
    res.set_content(json{{"error", msg}}.dump(), "application/json");
  });
}

void ApiServer::add_routes(std::vector<Route> routes) {
  for (auto& r : routes) {
    check_declaration(r);
    router_.add(std::move(r));
  }
}

void ApiServer::build_document() {
  if (document_.is_null()) document_ = openapi_document(router_.routes());
}

void ApiServer::serve_on(httplib::Server& server) {
  build_document();
  prepare(server);
  install(server);
}

// One handler per method for every path the router may answer: the router, not
// cpp-httplib's first-matching-regex rule, picks the route.
void ApiServer::install(httplib::Server& server) {
  std::string pattern = router_.path_pattern();
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); };
  server.Get(pattern, handler);
  server.Post(pattern, handler);
  server.Put(pattern, handler);
  server.Delete(pattern, handler);
}

void ApiServer::start() {
  build_document();
  install(server_);
  if (config_.port == 0) {
    port_ = server_.bind_to_any_port(config_.listen_address);
  } else {
    port_ = server_.bind_to_port(config_.listen_address, config_.port) ? config_.port : -1;
  }
  if (port_ <= 0) {
    throw Error(fmt::format("cannot listen on {}:{} for the API (port in use? another OMA running?)",
                            config_.listen_address, config_.port));
  }
  if (listen_fd_ >= 0) ::listen(listen_fd_, 1024);  // a second listen() only changes the backlog
  thread_ = std::thread([this] { server_.listen_after_bind(); });
  // stop() only works on a running server: wait until the accept loop has started.
  while (!server_.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  log::info("OMA API listening on {}:{}", config_.listen_address, port_);
}

void ApiServer::stop() {
  server_.stop();
  if (thread_.joinable()) thread_.join();
}

void ApiServer::handle(const httplib::Request& http, httplib::Response& res) {
  auto found = router_.match(http.method, http.path);
  if (!found) {
    res.status = 404;
    res.set_content(json{{"error", "no such route: see GET /api/v1/openapi.json"}}.dump(), "application/json");
    return;
  }
  const Route& r = *found->route;
  Request req{http, found->params};
  if (r.stream) {
    Caller caller;
    if (auto denied = authorize(r, http, caller)) {
      res.status = denied->status;
      res.set_content(denied->body.dump(), "application/json");
      return;
    }
    try {
      r.stream(req, res, caller);
    } catch (const std::exception& e) {
      res.status = 503;
      res.set_content(json{{"error", e.what()}}.dump(), "application/json");
    }
    return;
  }
  Reply reply = dispatch(r, req);
  check_reply(r, http, reply);
  res.status = reply.status;
  if (!reply.text.empty()) res.set_content(reply.text, "text/plain; version=0.0.4");
  else res.set_content(reply.body.dump(), "application/json");
}

// Decided from the headers alone, before the body is parsed or the handler runs.
std::optional<Reply> ApiServer::authorize(const Route& r, const httplib::Request& req, Caller& caller) {
  if (r.role == "pairing") {
    if (req.get_header_value("Authorization").rfind("Pairing ", 0) != 0)
      return error_reply(401, "missing pairing code (Authorization: Pairing CODE, from the OMA's pairing bundle)");
    return std::nullopt;
  }
  std::optional<TokenRole> needed = required_token_role(r);
  if (!needed) return std::nullopt;
  std::string h = req.get_header_value("Authorization");
  std::optional<TokenRecord> t;
  if (h.rfind("Bearer ", 0) == 0 && h.size() > 7) {
    try {
      t = tokens_.find_live_token(sha256_hex(h.substr(7)));
    } catch (const std::exception& e) {
      return error_reply(500, fmt::format("cannot check the bearer token: {}", e.what()));
    }
  }
  if (!t) return error_reply(401, "missing, unknown or revoked bearer token (Authorization: Bearer TOKEN)");
  if (!role_grants(t->role, *needed)) {
    return error_reply(403, fmt::format("{} {} needs a token of role {} or above; this token's role is {}: ask an "
                                        "admin for such a token",
                                        r.method, r.path, *needed, t->role));
  }
  caller = {t->token_id, enum_name(t->role)};
  return std::nullopt;
}

// Path parameters are there (the router matched them); query parameters may be absent.
void check_params(const Route& r, const Request& req) {
  for (const auto& f : r.params) {
    if (req.path.count(f.name)) {
      schema::validate_field(req.path.at(f.name), f, f.name);
    } else if (!req.query(f.name).empty()) {  // an empty query parameter stands for none
      schema::validate_field(req.query(f.name), f, f.name);
    } else if (f.required) {
      throw FieldError(f.name, "is required (a query parameter)");
    }
  }
}

json checked_input(const Route& r, const Request& req) {
  check_params(r, req);
  if (r.body && r.body_optional && req.http.body.empty()) return json::object();
  if (r.body) {
    json body = schema::parse_object(req.http.body);
    schema::validate(body, *r.body);
    return body;
  }
  if (!req.http.body.empty() && req.http.method != "GET") throw FieldError("body", "this route takes no body");
  return json();
}

void ApiServer::check_reply(const Route& r, const httplib::Request& req, Reply& reply) {
  std::vector<Response> all = responses(r);
  const Response* declared = response_for(r, reply.status, all);
  std::string problem;
  if (!declared) {
    problem = fmt::format("status {} is not one of its documented responses", reply.status);
  } else if (declared->schema || declared->status >= 400) {
    try {
      schema::validate(reply.body, declared->schema ? *declared->schema : kError, "", schema::Direction::Reply);
    } catch (const FieldError& e) {
      problem = e.what();
    }
  }
  if (problem.empty()) return;
  log::error("{} {}: the reply ({}) does not match the OpenAPI document: {}", req.method, r.path, reply.status,
             problem);
  if (config_.strict_replies) {
    reply = error_reply(500, fmt::format("{} {}: the reply ({}) does not match the OpenAPI document: {}", r.method,
                                         r.path, reply.status, problem));
  }
}

Reply ApiServer::dispatch(const Route& r, const Request& req) {
  Caller caller;
  if (auto denied = authorize(r, req.http, caller)) return *denied;
  try {
    json body = checked_input(r, req);
    return r.handler(req, body, caller);
  } catch (const FieldError& e) {
    return error_reply(400, e.what(), e.field());
  } catch (const UsageError& e) {
    return error_reply(400, e.what());
  } catch (const NotFound& e) {
    return error_reply(404, e.what());
  } catch (const Conflict& e) {
    return error_reply(409, e.what());
  } catch (const std::exception& e) {
    log::error("{} {}: {}", req.http.method, r.path, e.what());
    return error_reply(500, e.what());
  }
}

}  // namespace mk::oma::api
