#include "oma/api/openapi.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "common/error.h"
#include "oma/api/schemas.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using schema::Direction;

bool in_path(const Route& r, const std::string& name) { return r.path.find("{" + name + "}") != std::string::npos; }

std::vector<std::string> path_params(const std::string& path) {
  std::vector<std::string> out;
  for (size_t open = path.find('{'); open != std::string::npos; open = path.find('{', open + 1)) {
    size_t close = path.find('}', open);
    if (close == std::string::npos) break;
    out.push_back(path.substr(open + 1, close - open - 1));
  }
  return out;
}

std::string where(const Route& r) { return fmt::format("route {} {} ({})", r.method, r.path, r.operation_id); }

void check_example(const Route& r, const std::string& what, const std::function<void()>& check) {
  try {
    check();
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: the example of {} does not hold: {}", where(r), what, e.what()));
  }
}

const Schema& body_schema(const Response& resp) { return resp.schema ? *resp.schema : kError; }
bool is_json(const Response& resp) { return resp.schema || resp.status >= 400; }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// "operator": "operator or admin".
std::string roles_at_least(TokenRole needed) {
  std::vector<std::string> names;
  for (const auto& name : enum_names<TokenRole>()) {
    if (role_grants(parse_enum<TokenRole>(name, "role"), needed)) names.push_back(name);
  }
  return fmt::format("{}", fmt::join(names, " or "));
}

json operation(const Route& r, schema::Components& components) {
  json op = {{"operationId", r.operation_id},
             {"tags", {r.tag->name}},
             {"summary", r.summary},
             {"description", r.description}};
  if (auto role = required_token_role(r)) {
    op["x-required-role"] = enum_name(*role);
    op["description"] = fmt::format("{}\n\nRequired role: {} (a token of role {}).", r.description,
                                    enum_name(*role), roles_at_least(*role));
  }
  if (r.role.empty()) op["security"] = json::array();
  if (r.role == "pairing") op["security"] = json::array({{{"pairingCode", json::array()}}});
  if (!r.params.empty()) {
    op["parameters"] = json::array();
    for (const auto& f : r.params) {
      bool path = in_path(r, f.name);
      op["parameters"].push_back({{"name", f.name},
                                  {"in", path ? "path" : "query"},
                                  {"required", path || f.required},
                                  {"description", f.description},
                                  {"schema", components.describe(f, Direction::Request)}});
    }
  }
  if (r.body) {
    op["requestBody"] = {
        {"required", !r.body_optional},
        {"content",
         {{"application/json",
           {{"schema", components.describe(*r.body, Direction::Request)}, {"example", schema::example(*r.body)}}}}}};
  }
  json out = json::object();
  for (const auto& resp : responses(r)) {
    json content;
    if (is_json(resp)) {
      content = {{"schema", components.describe(body_schema(resp), Direction::Reply)},
                 {"example", schema::example(body_schema(resp))}};
    } else {
      content = {{"schema", {{"type", "string"}}}, {"example", resp.text_example}};
    }
    out[std::to_string(resp.status)] = {{"description", resp.description}, {"content", {{resp.media_type, content}}}};
  }
  op["responses"] = out;
  return op;
}

}  // namespace

std::vector<Response> responses(const Route& r) {
  std::vector<Response> all = r.responses;
  auto add = [&](int status, const char* description) {
    if (!response_for(r, status, all)) all.push_back({status, description});
  };
  if (!r.params.empty() || r.body)
    add(400, "invalid input: the message names the parameter or body field at fault, and so does \"field\"");
  if (r.role == "pairing") add(401, "no pairing code (Authorization: Pairing CODE)");
  else if (!r.role.empty()) add(401, "missing, unknown or revoked bearer token");
  if (r.role == "operator") add(403, "the token's role is viewer: this operation needs operator or admin");
  if (r.role == "admin") add(403, "the token's role is viewer or operator: this operation needs admin");
  if (r.body) add(413, "the request body is larger than the API's limit");
  if (r.body) add(415, "the request body is compressed (Content-Encoding): send it uncompressed");
  add(500, "an internal error; the message says what failed");
  std::sort(all.begin(), all.end(), [](const Response& a, const Response& b) { return a.status < b.status; });
  return all;
}

const Response* response_for(const Route&, int status, const std::vector<Response>& all) {
  for (const auto& resp : all) {
    if (resp.status == status) return &resp;
  }
  return nullptr;
}

std::optional<TokenRole> required_token_role(const Route& r) {
  if (r.role.empty() || r.role == "pairing") return std::nullopt;
  if (auto role = find_enum<TokenRole>(r.role)) return role;
  throw Error(fmt::format("{}: role \"{}\" is none of \"\" (no token), \"pairing\", {}", where(r), r.role,
                          fmt::join(enum_names<TokenRole>(), ", ")));
}

void check_declaration(const Route& r) {
  if (r.operation_id.empty() || !r.tag || r.summary.empty() || r.description.empty())
    throw Error(fmt::format("route {} {}: declare its operation_id, tag, summary and description", r.method, r.path));
  required_token_role(r);
  for (const auto& name : path_params(r.path)) {
    bool declared = std::any_of(r.params.begin(), r.params.end(), [&](const Field& f) { return f.name == name; });
    if (!declared) throw Error(fmt::format("{}: the path parameter {{{}}} is not declared in params", where(r), name));
  }
  bool success = std::any_of(r.responses.begin(), r.responses.end(),
                             [](const Response& resp) { return resp.status >= 200 && resp.status < 300; });
  if (!success) throw Error(fmt::format("{}: declare its success response", where(r)));
  for (const auto& f : r.params) {
    if (f.description.empty()) throw Error(fmt::format("{}: describe the parameter {}", where(r), f.name));
    json example = f.example.is_null() && !f.one_of.empty() ? json(f.one_of.front()) : f.example;
    check_example(r, "parameter " + f.name, [&] { schema::validate_field(example, f, f.name); });
  }
  if (r.body) check_example(r, "the body", [&] { schema::validate(schema::example(*r.body), *r.body); });
  for (const auto& resp : responses(r)) {
    if (!is_json(resp)) continue;
    check_example(r, fmt::format("response {}", resp.status), [&] {
      schema::validate(schema::example(body_schema(resp)), body_schema(resp), "", Direction::Reply);
    });
  }
}

json openapi_document(const std::vector<Route>& routes) {
  schema::Components components;
  json paths = json::object();
  std::set<std::string> ids;
  std::vector<const Tag*> tags;
  for (const auto& r : routes) {
    check_declaration(r);
    if (!ids.insert(r.operation_id).second)
      throw Error(fmt::format("{}: another route has the operationId {}", where(r), r.operation_id));
    bool known = std::any_of(tags.begin(), tags.end(), [&](const Tag* t) { return t->name == r.tag->name; });
    if (!known) tags.push_back(r.tag);
    paths[r.path][lower(r.method)] = operation(r, components);
  }
  json tag_list = json::array();
  for (const Tag* t : tags) tag_list.push_back({{"name", t->name}, {"description", t->description}});
  json schemes = {{"bearer",
                   {{"type", "http"},
                    {"scheme", "bearer"},
                    {"description", "an API token (Authorization: Bearer TOKEN) of role viewer, operator or admin"}}},
                  {"pairingCode",
                   {{"type", "apiKey"}, {"in", "header"}, {"name", "Authorization"},
                    {"description", "\"Pairing CODE\" with the one-time code of a pairing bundle"}}}};
  json info = {
      {"title", "MigrateKit OSSEA OMA API"},
      {"version", "1"},
      {"description",
       "The OSSEA Migration Appliance's REST API: the VMs it migrates from VMware into CloudStack, their "
       "replication jobs, cutover and test failover, the exports and volumes behind them, the paired VMAs, "
       "settings and tokens. Every route but /health needs a bearer token, and each operation names the least "
       "role its token must have (x-required-role): a viewer token reads; an operator token also replicates, "
       "schedules and runs test failovers; an admin token also cuts over and manages settings, network "
       "mappings, tokens and VMAs. A weaker token is refused with 403 before the request is carried out. "
       "Bodies and replies are JSON; times are milliseconds since the Unix epoch. Errors are "
       "{\"error\": message, \"field\"?: the input at fault}."},
      {"contact", {{"name", "MigrateKit OSSEA maintainers"}}},
  };
  json servers = json::array(
      {{{"url", "http://{host}:{port}"},
        {"description", "an OMA: its API port, or its GUI port, which serves the same API"},
        {"variables",
         {{"host", {{"default", "oma"}, {"description", "the OMA's address"}}},
          {"port", {{"default", "8082"}, {"description", "8082 (API) or 3001 (GUI) unless configured otherwise"}}}}}}});
  return {{"openapi", "3.0.3"},
          {"info", info},
          {"servers", servers},
          {"tags", tag_list},
          {"security", json::array({{{"bearer", json::array()}}})},
          {"paths", paths},
          {"components", {{"schemas", components.schemas()}, {"securitySchemes", schemes}}}};
}

}  // namespace mk::oma::api
