// libFuzzer target: the OMA REST API's request checks (src/oma/api, common/json_schema):
// the router matching a method and path to a route, then the route's path and query
// parameters and its JSON body checked against the route's declaration, exactly as the
// ApiServer does before a handler runs (api::checked_input). Handlers never run: the routes
// are built over real collaborators (SQLite in a temporary directory, nothing
// started) only because routes refer to them.
//
// Input: "METHOD PATH[?QUERY]\n" and the body. Checks: only mk::Error escapes (FieldError for
// bad input); a body that passes is a JSON object.
#include "oma_world.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  mk::log::set_level(mk::log::Level::Off);
  mk::fuzz::world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto eol = text.find('\n');
  std::string line = text.substr(0, eol);
  httplib::Request http;
  auto space = line.find(' ');
  if (space == std::string::npos) return 0;
  http.method = line.substr(0, space);
  std::string target = line.substr(space + 1);
  auto q = target.find('?');
  http.path = target.substr(0, q);
  if (q != std::string::npos) httplib::detail::parse_query_text(target.substr(q + 1), http.params);
  http.body = eol == std::string::npos ? "" : text.substr(eol + 1);

  std::optional<mk::oma::api::Router::Match> found;
  mk::fuzz::expect_error([&] { found = mk::fuzz::world().router.match(http.method, http.path); });
  if (!found) return 0;
  mk::oma::api::Request req{http, found->params};
  nlohmann::json body;
  if (!mk::fuzz::expect_error([&] { body = mk::oma::api::checked_input(*found->route, req); })) return 0;
  if (found->route->body && !body.is_object()) mk::fuzz::fail("a checked body is not an object: " + body.dump());
  return 0;
}
