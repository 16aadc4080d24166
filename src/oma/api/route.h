// Route: one operation of the OMA's REST API as a value (method, path, summary, role,
// body schema, handler), and what its handler sees (Request, Caller) and returns (Reply).
//
// Routes are declared in one file per resource (oma/api/routes/) and collected into the
// ApiServer's Router, which matches requests to them, checks the token and the body, and
// describes them in the OpenAPI document. A route holds references to the collaborators
// its handler uses; they must outlive the ApiServer. Values; a Route's handler is called
// from many threads at once and must be thread-safe.
#pragma once

#include <httplib.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "common/json_schema.h"

namespace mk::oma::api {

using schema::Field;
using schema::FieldError;
using schema::Schema;

// The values of a path's {parameters}, by name.
using PathParams = std::map<std::string, std::string>;

// A request as a handler sees it: the HTTP request and its path parameters.
struct Request {
  const httplib::Request& http;
  const PathParams& path;

  // The value of the path parameter {name}; "" if the route has none of that name.
  std::string param(const std::string& name) const {
    auto it = path.find(name);
    return it == path.end() ? "" : it->second;
  }
  std::string query(const std::string& name) const { return http.get_param_value(name); }
  std::string header(const std::string& name) const { return http.get_header_value(name); }
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
  std::function<Reply(const Request&, const nlohmann::json& body, const Caller&)> handler;
  bool body_optional = false;  // an empty body stands for {} (every field of `body` optional)
  // Streaming routes (server-sent events) write the response themselves, after the
  // token check; handler is unused for them.
  std::function<void(const Request&, httplib::Response&, const Caller&)> stream = nullptr;
};

}  // namespace mk::oma::api
