// API tokens (admin): list, create (shown once), revoke.
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/names.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Schema kTokenSchema{{
    {.name = "name", .max_length = 64, .check = name_check},
    {.name = "role", .one_of = enum_names<TokenRole>()},
}};

}  // namespace

std::vector<Route> token_routes(const Services& s) {
  ConfigRepository& config = s.repos.config;
  std::vector<Route> routes;
  routes.push_back({"GET", "/api/v1/tokens", "List API tokens (never the tokens themselves)", "admin", nullptr,
       [&config](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& t : config.list_tokens()) {
           out.push_back({{"token_id", t.token_id}, {"name", t.name}, {"role", t.role}, {"created_at", t.created_at},
                          {"revoked_at", opt_json(t.revoked_at)}});
         }
         return {200, {{"tokens", out}}, ""};
       }});
  routes.push_back({"POST", "/api/v1/tokens", "Create an API token; the token is shown once", "admin", &kTokenSchema,
       [&config](auto&, const json& b, auto&) -> Reply {
         TokenRecord t{new_uuid(), b["name"], b["role"].get<TokenRole>(), now_ms(), std::nullopt};
         std::string token = new_token();
         config.insert_token(t, sha256_hex(token));
         return {201, {{"token_id", t.token_id}, {"name", t.name}, {"role", t.role}, {"token", token}}, ""};
       }});
  routes.push_back({"DELETE", "/api/v1/tokens/{token_id}", "Revoke an API token", "admin", nullptr,
       [&config](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "token_id");
         config.revoke_token(id);
         return {200, {{"token_id", id}, {"revoked", true}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
