// API tokens (admin): list, create (shown once), revoke.
#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"
#include "oma/names.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kTokensTag{"Tokens", "API tokens (admin): who may call the API, and with which role"};

const Schema kTokenSchema{{
    {.name = "name", .description = "what the token is for", .max_length = 64, .check = name_check,
     .example = "nightly report"},
    {.name = "role",
     .description = "viewer: reads; operator: also replicates, schedules, runs test failovers; admin: also cuts "
                    "over, manages settings, network mappings, tokens and VMAs",
     .one_of = kRoles},
}, "NewToken", "a token to create"};

const Schema kToken{{
    uuid_field("token_id", "the token's id (not the token)"),
    text_field("name", "what it is for", "nightly report"),
    enum_field("role", "what it may do", kRoles),
    time_field("created_at", "when it was created"),
    nullable(time_field("revoked_at", "when it was revoked")),
}, "Token", "an API token (never the token itself)"};
const Schema kTokenList{{array_field("tokens", "every token, revoked ones too", &kToken)}};
const Schema kTokenCreated{{
    uuid_field("token_id", "the token's id"),
    text_field("name", "what it is for", "nightly report"),
    enum_field("role", "what it may do", kRoles),
    text_field("token", "the token: shown this once, send it as Authorization: Bearer TOKEN",
               "mko_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
}, "TokenCreated", "a new token, shown once"};
const Schema kTokenRevoked{{
    uuid_field("token_id", "the token's id"),
    bool_field("revoked", "always true"),
}};

}  // namespace

std::vector<Route> token_routes(const Services& s) {
  ConfigRepository& config = s.repos.config;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/tokens",
      .operation_id = "listTokens",
      .tag = &kTokensTag,
      .summary = "List API tokens (never the tokens themselves)",
      .description = "Every API token's id, name, role and dates; the database holds only their hashes.",
      .role = "admin",
      .responses = {{200, "the tokens", &kTokenList}},
      .handler = [&config](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& t : config.list_tokens()) {
           out.push_back({{"token_id", t.token_id}, {"name", t.name}, {"role", t.role}, {"created_at", t.created_at},
                          {"revoked_at", opt_json(t.revoked_at)}});
         }
         return {200, {{"tokens", out}}, ""};
       }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/tokens",
      .operation_id = "createToken",
      .tag = &kTokensTag,
      .summary = "Create an API token; the token is shown once",
      .description = "Creates a token with a role; the reply is the only place the token appears (the OMA keeps "
                     "its SHA-256).",
      .role = "admin",
      .body = &kTokenSchema,
      .responses = {{201, "the token, created", &kTokenCreated}},
      .handler = [&config](auto&, const json& b, auto&) -> Reply {
         TokenRecord t{new_uuid(), b["name"], b["role"].get<TokenRole>(), now_ms(), std::nullopt};
         std::string token = new_token();
         config.insert_token(t, sha256_hex(token));
         return {201, {{"token_id", t.token_id}, {"name", t.name}, {"role", t.role}, {"token", token}}, ""};
       }});
  routes.push_back({
      .method = "DELETE",
      .path = "/api/v1/tokens/{token_id}",
      .operation_id = "revokeToken",
      .tag = &kTokensTag,
      .summary = "Revoke an API token",
      .description = "Revokes a token at once: its next request is refused. Revoking the last admin token leaves "
                     "no admin: `oma --reset-admin-token`, run on the OMA's machine, makes a new one.",
      .role = "admin",
      .params = {uuid_path_param("token_id", "the token")},
      .responses = {{200, "the token, revoked", &kTokenRevoked}, {404, "no such token"}},
      .handler = [&config](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("token_id");
         config.revoke_token(id);
         return {200, {{"token_id", id}, {"revoked", true}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
