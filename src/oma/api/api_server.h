// ApiServer: the OMA's REST API (/api/v1, JSON), the one front door for the GUI, the
// CLI and scripts.
//
// Every route is declared once in a table (method, path, summary, role, body schema,
// handler); the table registers the route with cpp-httplib, checks the bearer token
// and the body, and produces the OpenAPI document served at /api/v1/openapi.json, so
// the description cannot drift from the server. /health needs no token; every other
// route needs a live (not revoked) token, and tokens and settings need the admin role.
// Errors are JSON {"error": message, "field": name?} with 400 (bad input, naming the
// field), 401, 403, 404, 409, 413 (body over the limit) or 500.
//
// Owns the HTTP server and its listener thread; not its collaborators. Thread-safe
// (cpp-httplib serves requests from a thread pool; all handlers use thread-safe
// collaborators).
#pragma once

#include <httplib.h>

#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/json_schema.h"
#include "oma/crypto.h"
#include "oma/db/repositories.h"
#include "oma/exports/export_backend.h"
#include "oma/jobs/job_manager.h"
#include "oma/pairing/pairing_service.h"

namespace mk::oma::api {

using schema::Field;
using schema::FieldError;
using schema::Schema;

struct ApiConfig {
  std::string listen_address = "0.0.0.0";
  int port = 8082;               // 0: any free port (see port())
  size_t max_body_bytes = 64 * 1024;
  int threads = 16;              // request worker threads
};

struct Reply {
  int status = 200;
  nlohmann::json body;
  std::string text;  // non-JSON replies (/metrics): sent instead of body when set
};

struct Caller {
  std::string token_id, role;
};

struct Route {
  std::string method;  // GET, POST, PUT, DELETE
  std::string path;    // OpenAPI form: /api/v1/jobs/{job_id}
  std::string summary;
  std::string role;    // "" = no token (only /health), "operator" (any token), "admin",
                       // "pairing" (Authorization: Pairing CODE; the handler checks the code)
  const Schema* body = nullptr;
  std::function<Reply(const httplib::Request&, const nlohmann::json& body, const Caller&)> handler;
  bool body_optional = false;  // an empty body stands for {} (every field of `body` optional)
  // Streaming routes (server-sent events) write the response themselves, after the
  // token check; handler is unused for them.
  std::function<void(const httplib::Request&, httplib::Response&, const Caller&)> stream = nullptr;
};

class ApiServer {
 public:
  // `extra_routes` (other components' routes, e.g. cutover) are declared before the
  // built-in ones, so a specific path of theirs wins over a built-in {name} pattern.
  // `pairing` (optional) adds the /api/v1/vmas routes.
  // The API serves every resource, so it is given every repository.
  ApiServer(Repositories& repos, JobManager& jobs, ExportBackend& exports, SecretBox& secrets, ApiConfig config,
            std::vector<Route> extra_routes = {}, PairingService* pairing = nullptr);
  ~ApiServer();

  // Binds and starts serving on a background thread. Throws mk::Error if it cannot bind.
  void start();
  void stop();
  int port() const { return port_; }

  const std::vector<Route>& routes() const { return routes_; }
  // Adds routes to the one table (and the OpenAPI document). Call before start().
  void add_routes(std::vector<Route> routes);
  // Serves the same routes, limits and error replies on another listener (the GUI's),
  // so the GUI's origin has the very same API. Call after the last add_routes().
  void serve_on(httplib::Server& server);
  nlohmann::json openapi() const;
  // A job with its disks as GET /api/v1/jobs/{id}/progress shows it (the event stream
  // sends the same view).
  static nlohmann::json job_progress_json(const JobRecord& job, const std::vector<JobDiskRecord>& disks);

 private:
  void declare_routes();
  void declare_vma_routes();
  void prepare(httplib::Server& server);
  void install(const Route& r, httplib::Server& server);
  std::optional<Reply> authorize(const Route& r, const httplib::Request& req, Caller& caller);
  Reply dispatch(const Route& r, const httplib::Request& req);
  Caller authenticate(const httplib::Request& req, const std::string& role);
  std::string metrics();
  std::pair<int, int> approved_tunnels();  // up, down

  Repositories& repos_;
  JobManager& jobs_;
  ExportBackend& exports_;
  SecretBox& secrets_;
  ApiConfig config_;
  PairingService* pairing_ = nullptr;
  std::vector<Route> routes_;
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
  int listen_fd_ = -1;  // owned by server_
};

}  // namespace mk::oma::api
