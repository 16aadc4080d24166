// The OpenAPI 3.0 document of the OMA's REST API, built from the route declarations: per
// operation its operationId, tag, summary, description, parameters, request schema and a
// schema and example for every response; shared objects as named components ($ref).
//
// responses() is the one list of what an operation may answer — the route's own
// responses and the errors the ApiServer adds (400 for input, 401 for a token, 403 for
// a role, 413 for a body, 500 always) — used by the document and by the reply checks.
// Free functions; thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

#include "oma/api/route.h"
#include "oma/db/config_repository.h"

namespace mk::oma::api {

// The token role `route` needs (Route::role); nullopt for a route that takes no bearer
// token (/health, pairing). Throws mk::Error for a role that is not a TokenRole's name.
std::optional<TokenRole> required_token_role(const Route& route);

// Everything `route` may answer, by status.
std::vector<Response> responses(const Route& route);

// The declared response of `route` for `status`, or null.
const Response* response_for(const Route& route, int status, const std::vector<Response>& all);

// Throws mk::Error naming the route when its declaration is incomplete or inconsistent
// (no operationId, tag, description or success response; an unknown role; a
// {parameter} of the path not declared; an example that does not validate).
void check_declaration(const Route& route);

// The document. Throws mk::Error as check_declaration() does, and for two routes with
// one operationId or one schema name given to two schemas.
nlohmann::json openapi_document(const std::vector<Route>& routes);

}  // namespace mk::oma::api
