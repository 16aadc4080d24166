// Route: one operation of the OMA's REST API as a value — method, path, its description
// for the OpenAPI document (operationId, tag, summary, description, parameters, request
// and response schemas), who may call it, and its handler — and what the handler sees
// (Request, Caller) and returns (Reply).
//
// Routes are declared in one file per resource (oma/api/routes/) and collected into the
// ApiServer's Router, which matches requests to them; the ApiServer checks the token, the
// parameters and the body against the declaration before the handler runs, checks the
// reply against the declared response after, and describes the same declarations in the
// OpenAPI document. A route holds references to the collaborators its handler uses; they
// must outlive the ApiServer. Values; a Route's handler is called from many threads at
// once and must be thread-safe.
#pragma once

#include <httplib.h>

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "common/json_schema.h"

namespace mk::oma::api {

using schema::Field;
using schema::FieldError;
using schema::Schema;

// The values of a path's {parameters}, by name.
using PathParams = std::map<std::string, std::string>;

// A request as a handler sees it: the HTTP request and its path parameters, already
// checked against the route's declared parameters.
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

// A group of operations in the document (one per resource).
struct Tag {
  std::string name, description;
};

// One answer an operation may give.
struct Response {
  int status = 200;
  std::string description;
  // The JSON body (a reply schema). Null: the Error schema for an error status, else a
  // text body of `media_type` (e.g. /metrics, the event stream) shown by `text_example`.
  const Schema* schema = nullptr;
  std::string media_type = "application/json";
  std::string text_example = {};
};

struct Route {
  std::string method;  // GET, POST, PUT, DELETE
  std::string path;    // OpenAPI form: /api/v1/jobs/{job_id}
  std::string operation_id;  // unique, camelCase: "listJobs"
  const Tag* tag = nullptr;
  std::string summary;
  std::string description;
  // Who may call it. "" = anyone (only /health); "pairing" = Authorization: Pairing CODE
  // (the handler checks the code); else the least token role that may: "viewer" (reads),
  // "operator" (replicate, schedule, test failover) or "admin" (cut over, settings,
  // network mappings, tokens, VMAs) — see TokenRole. These declarations are the one
  // table of who may do what: the ApiServer refuses a weaker token (403) before it
  // parses the body or runs the handler, and the OpenAPI document shows the role of
  // each operation (x-required-role).
  std::string role;
  // Parameters: those named in the path ({vm_id}) are path parameters, the others query
  // parameters (optional unless required). Checked before the handler runs.
  std::vector<Field> params = {};
  const Schema* body = nullptr;  // a request schema
  bool body_optional = false;    // an empty body stands for {} (every field of `body` optional)
  // The success responses and the errors particular to this route; the ApiServer adds
  // 400 (input), 401 (token), 403 (role), 413 (body too large), 415 (body compressed) and
  // 500 where they apply.
  std::vector<Response> responses = {};
  std::function<Reply(const Request&, const nlohmann::json& body, const Caller&)> handler = nullptr;
  // Streaming routes (server-sent events) write the response themselves, after the
  // token check; handler is unused for them.
  std::function<void(const Request&, httplib::Response&, const Caller&)> stream = nullptr;
};

}  // namespace mk::oma::api
