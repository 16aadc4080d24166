#include "oma/api/api_server.h"

#include <fmt/format.h>

#include <regex>

#include "common/log.h"
#include "oma/api/checks.h"
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
  router_.add({"GET", "/api/v1/openapi.json", "This API's OpenAPI 3 description", "operator", nullptr,
               [this](auto&, auto&, auto&) -> Reply { return {200, openapi(), ""}; }});
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
  for (auto& r : routes) router_.add(std::move(r));
}

void ApiServer::serve_on(httplib::Server& server) {
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
  res.status = reply.status;
  if (!reply.text.empty()) res.set_content(reply.text, "text/plain; version=0.0.4");
  else res.set_content(reply.body.dump(), "application/json");
}

Caller ApiServer::authenticate(const httplib::Request& req, const std::string& role) {
  std::string h = req.get_header_value("Authorization");
  if (h.rfind("Bearer ", 0) != 0 || h.size() <= 7) throw Error("401");
  auto t = tokens_.find_live_token(sha256_hex(h.substr(7)));
  if (!t) throw Error("401");
  if (role == "admin" && t->role != TokenRole::Admin) throw Error("403");
  return {t->token_id, enum_name(t->role)};
}

std::optional<Reply> ApiServer::authorize(const Route& r, const httplib::Request& req, Caller& caller) {
  if (r.role == "pairing") {
    if (req.get_header_value("Authorization").rfind("Pairing ", 0) != 0)
      return error_reply(401, "missing pairing code (Authorization: Pairing CODE, from the OMA's pairing bundle)");
    return std::nullopt;
  }
  if (r.role.empty()) return std::nullopt;
  try {
    caller = authenticate(req, r.role);
  } catch (const Error& e) {
    if (std::string(e.what()) == "403") return error_reply(403, "this route needs an admin token");
    if (std::string(e.what()) == "401")
      return error_reply(401, "missing, unknown or revoked bearer token (Authorization: Bearer TOKEN)");
    return error_reply(500, e.what());
  }
  return std::nullopt;
}

Reply ApiServer::dispatch(const Route& r, const Request& req) {
  Caller caller;
  if (auto denied = authorize(r, req.http, caller)) return *denied;
  try {
    json body;
    if (r.body && r.body_optional && req.http.body.empty()) {
      body = json::object();
    } else if (r.body) {
      body = schema::parse_object(req.http.body);
      schema::validate(body, *r.body);
    } else if (!req.http.body.empty() && req.http.method != "GET") {
      throw FieldError("body", "this route takes no body");
    }
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

json ApiServer::openapi() const {
  json paths = json::object();
  for (const auto& r : router_.routes()) {
    std::string m = r.method;
    std::transform(m.begin(), m.end(), m.begin(), ::tolower);
    json op = {{"summary", r.summary},
               {"responses",
                {{"200", {{"description", "success"}}},
                 {"400", {{"description", "invalid input: {error, field}"}}},
                 {"401", {{"description", "missing, unknown or revoked token"}}}}}};
    if (r.role.empty()) op["security"] = json::array();
    if (r.role == "pairing") op["security"] = json::array({{{"pairingCode", json::array()}}});
    if (r.role == "admin") op["responses"]["403"] = {{"description", "needs an admin token"}};
    if (r.body) op["requestBody"] = {{"required", !r.body_optional}, {"content", {{"application/json", {{"schema", schema::to_openapi(*r.body)}}}}}};
    json params = json::array();
    std::smatch m2;
    std::string rest = r.path;
    while (std::regex_search(rest, m2, std::regex(R"(\{([a-z_]+)\})"))) {
      params.push_back({{"name", m2[1].str()}, {"in", "path"}, {"required", true}, {"schema", {{"type", "string"}}}});
      rest = m2.suffix();
    }
    if (!params.empty()) op["parameters"] = params;
    paths[r.path][m] = op;
  }
  json schemes = {{"bearer", {{"type", "http"}, {"scheme", "bearer"}}},
                  {"pairingCode",
                   {{"type", "apiKey"}, {"in", "header"}, {"name", "Authorization"},
                    {"description", "\"Pairing CODE\" with the one-time code of a pairing bundle"}}}};
  return {{"openapi", "3.0.3"},
          {"info", {{"title", "MigrateKit OSSEA OMA API"}, {"version", "1"}}},
          {"components", {{"securitySchemes", schemes}}},
          {"security", json::array({{{"bearer", json::array()}}})},
          {"paths", paths}};
}

}  // namespace mk::oma::api
