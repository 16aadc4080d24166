#include "oma/api/api_server.h"

#include <fmt/format.h>

#include <regex>

#include "common/log.h"
#include "oma/api/checks.h"
#include "oma/api/openapi.h"
#include "oma/api/schemas.h"
#include "oma/crypto.h"
#include "oma/errors.h"

namespace mk::oma::api {

using nlohmann::json;

ApiServer::ApiServer(ConfigRepository& tokens, ApiConfig config)
    : tokens_(tokens), config_(std::move(config)), server_(config_.limits) {
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

void ApiServer::add_routes(std::vector<Route> routes) {
  for (auto& r : routes) {
    check_declaration(r);
    router_.add(std::move(r));
  }
}

void ApiServer::build_document() {
  if (document_.is_null()) document_ = openapi_document(router_.routes());
}

void ApiServer::serve_on(http::BoundedHttpServer& server) {
  build_document();
  install(server, false);
}

// One handler per method for every path the router may answer: the router, not
// cpp-httplib's first-matching-regex rule, picks the route. The admission decides every
// request from its head first: on the API's own listener every path is the router's; on
// the GUI's, the other paths are its files (GET/HEAD, no body).
void ApiServer::install(http::BoundedHttpServer& server, bool api_only) {
  httplib::Server& h = server.handlers();
  h.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    std::string msg = res.status == 404   ? "no such route: see GET /api/v1/openapi.json"
                      : res.status == 413 ? "request body too large"
                                          : fmt::format("HTTP {}", res.status);
    res.set_content(json{{"error", msg}}.dump(), "application/json");
  });
  std::string pattern = router_.path_pattern();
  auto handler = [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); };
  h.Get(pattern, handler);
  h.Post(pattern, handler);
  h.Put(pattern, handler);
  h.Delete(pattern, handler);
  if (api_only) {
    server.set_admission([this](const http::RequestHead& head) { return admit(head); });
    return;
  }
  server.set_admission([this, api = std::regex(pattern)](const http::RequestHead& head) {
    if (std::regex_match(head.path, api)) return admit(head);
    if (head.method == "GET" || head.method == "HEAD") return http::Verdict::admit(0);
    return http::Verdict::refuse(
        405, json{{"error", fmt::format("{} is not allowed here: the GUI's files are read with GET", head.method)}}
                 .dump());
  });
}

void ApiServer::start() {
  build_document();
  install(server_, true);
  server_.set_tls(config_.tls);
  port_ = server_.bind(config_.listen_address, config_.port);
  server_.start();
  log::info("OMA API listening on {}://{}:{}", config_.tls ? "https" : "http", config_.listen_address, port_);
}

void ApiServer::stop() { server_.stop(); }

// The route, the token and its role, from the request's head alone: before a byte of the
// body is read, and on a worker thread (the token is looked up in the database).
http::Verdict ApiServer::admit(const http::RequestHead& head) {
  auto found = router_.match(head.method, head.path);
  if (!found) return http::Verdict::refuse(404, json{{"error", "no such route: see GET /api/v1/openapi.json"}}.dump());
  Caller caller;
  if (auto denied = authorize(*found->route, head.header("Authorization"), caller))
    return http::Verdict::refuse(denied->status, denied->body.dump());
  return http::Verdict::admit(config_.limits.max_body, caller);
}

void ApiServer::handle(const httplib::Request& hreq, httplib::Response& res) {
  auto found = router_.match(hreq.method, hreq.path);
  const auto* caller = std::any_cast<Caller>(&http::BoundedHttpServer::admitted());
  if (!found || !caller) {  // the admission found the route and the caller: never here
    res.status = found ? 401 : 404;
    res.set_content(json{{"error", found ? "the request was not admitted" : "no such route: see GET /api/v1/openapi.json"}}.dump(),
                    "application/json");
    return;
  }
  const Route& r = *found->route;
  Request req{hreq, found->params};
  if (r.stream) {
    try {
      r.stream(req, res, *caller);
    } catch (const std::exception& e) {
      res.status = 503;
      res.set_content(json{{"error", e.what()}}.dump(), "application/json");
    }
    return;
  }
  Reply reply = dispatch(r, req, *caller);
  check_reply(r, hreq, reply);
  res.status = reply.status;
  if (!reply.text.empty()) res.set_content(reply.text, "text/plain; version=0.0.4");
  else res.set_content(reply.body.dump(), "application/json");
}

// Decided from the Authorization header alone, before the body is read.
std::optional<Reply> ApiServer::authorize(const Route& r, const std::string& h, Caller& caller) {
  if (r.role == "pairing") {
    if (h.rfind("Pairing ", 0) != 0)
      return error_reply(401, "missing pairing code (Authorization: Pairing CODE, from the OMA's pairing bundle)");
    return std::nullopt;
  }
  std::optional<TokenRole> needed = required_token_role(r);
  if (!needed) return std::nullopt;
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

Reply ApiServer::dispatch(const Route& r, const Request& req, const Caller& caller) {
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
