// The API's router: literal segments win over {parameters} whatever the declaration
// order, path parameters are extracted by name, routes that would tie are refused when
// declared, malformed paths are refused, and the listener pattern covers only the
// routes' first segments.
#include "oma/api/router.h"

#include <gtest/gtest.h>

#include <regex>

#include "common/error.h"

namespace mk::oma::api {
namespace {

Route route(const std::string& method, const std::string& path) {
  return {.method = method, .path = path, .summary = "summary of " + path, .role = "operator"};
}

// The path of the route that wins, or "" when none does.
std::string winner(const Router& router, const std::string& method, const std::string& path) {
  auto m = router.match(method, path);
  return m ? m->route->path : "";
}

TEST(RouterTest, LiteralSegmentsWinWhateverTheDeclarationOrder) {
  for (bool literal_first : {true, false}) {
    SCOPED_TRACE(literal_first ? "literal declared first" : "parameter declared first");
    Router router;
    if (literal_first) router.add(route("PUT", "/api/v1/settings/cloudstack"));
    router.add(route("PUT", "/api/v1/settings/{name}"));
    if (!literal_first) router.add(route("PUT", "/api/v1/settings/cloudstack"));
    EXPECT_EQ(winner(router, "PUT", "/api/v1/settings/cloudstack"), "/api/v1/settings/cloudstack");
    auto m = router.match("PUT", "/api/v1/settings/vcenter.host");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->route->path, "/api/v1/settings/{name}");
    EXPECT_EQ(m->params.at("name"), "vcenter.host");
  }
}

TEST(RouterTest, TheLeftmostDifferingSegmentDecides) {
  for (bool swap : {false, true}) {
    Router router;
    std::vector<std::string> paths = {"/a/{x}/b", "/a/c/{y}"};
    if (swap) std::swap(paths[0], paths[1]);
    for (const auto& p : paths) router.add(route("GET", p));
    EXPECT_EQ(winner(router, "GET", "/a/c/b"), "/a/c/{y}");  // both match: the literal c is further left
    EXPECT_EQ(winner(router, "GET", "/a/d/b"), "/a/{x}/b");
    EXPECT_EQ(winner(router, "GET", "/a/c/d"), "/a/c/{y}");
    EXPECT_EQ(winner(router, "GET", "/a/d/d"), "");
  }
}

TEST(RouterTest, ExtractsEveryPathParameterByName) {
  Router router;
  router.add(route("POST", "/api/v1/vms/{vm_id}/disks/{unit}/resize"));
  auto m = router.match("POST", "/api/v1/vms/4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d/disks/2/resize");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->params.size(), 2u);
  EXPECT_EQ(m->params.at("vm_id"), "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d");
  EXPECT_EQ(m->params.at("unit"), "2");
}

TEST(RouterTest, MatchesWholeSegmentsOfTheRightMethodOnly) {
  Router router;
  router.add(route("GET", "/api/v1/vms"));
  router.add(route("GET", "/api/v1/vms/{vm_id}"));
  router.add(route("DELETE", "/api/v1/tokens/{token_id}"));
  EXPECT_EQ(winner(router, "GET", "/api/v1/vms"), "/api/v1/vms");
  EXPECT_EQ(winner(router, "HEAD", "/api/v1/vms"), "/api/v1/vms");  // HEAD is served as GET
  EXPECT_EQ(winner(router, "POST", "/api/v1/vms"), "");
  EXPECT_EQ(winner(router, "GET", "/api/v1/vms/"), "");              // a parameter is never empty
  EXPECT_EQ(winner(router, "GET", "/api/v1/vms/x/y"), "");
  EXPECT_EQ(winner(router, "GET", "/api/v1/vmsx"), "");
  EXPECT_EQ(winner(router, "GET", "/api/v1"), "");
  EXPECT_EQ(winner(router, "GET", "api/v1/vms"), "");
  EXPECT_EQ(winner(router, "GET", ""), "");
  EXPECT_EQ(winner(router, "GET", "/api/v1/tokens/t1"), "");
  EXPECT_EQ(winner(router, "DELETE", "/api/v1/tokens/t1"), "/api/v1/tokens/{token_id}");
}

TEST(RouterTest, RefusesRoutesThatWouldTie) {
  Router router;
  router.add(route("GET", "/api/v1/vms/{vm_id}"));
  router.add(route("POST", "/api/v1/vms/{vm_id}"));      // another method: no tie
  router.add(route("GET", "/api/v1/vms/{vm_id}/disks"));  // another length: no tie
  router.add(route("GET", "/api/v1/vms/all"));            // a literal: it wins, no tie
  try {
    router.add(route("GET", "/api/v1/vms/{id}"));
    FAIL() << "a second GET /api/v1/vms/{...} was accepted";
  } catch (const Error& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("GET /api/v1/vms/{vm_id}"), std::string::npos) << what;
    EXPECT_NE(what.find("GET /api/v1/vms/{id}"), std::string::npos) << what;
  }
  EXPECT_THROW(router.add(route("GET", "/api/v1/vms/all")), Error);
  EXPECT_EQ(router.routes().size(), 4u);
}

TEST(RouterTest, RefusesMalformedPaths) {
  for (std::string p : {"", "api/v1/vms", "/", "/api//vms", "/api/v1/", "/vms/{VM}", "/vms/{}", "/vms/{vm_id",
                        "/vms/x{vm_id}", "/vms/{vm_id}/disks/{vm_id}", "/vms/{vm-id}"}) {
    SCOPED_TRACE(p);
    Router router;
    EXPECT_THROW(router.add(route("GET", p)), Error);
    EXPECT_TRUE(router.routes().empty());
  }
}

TEST(RouterTest, KeepsDeclarationOrderForTheDocument) {
  Router router;
  for (std::string p : {"/b", "/a", "/c/{x}"}) router.add(route("GET", p));
  ASSERT_EQ(router.routes().size(), 3u);
  EXPECT_EQ(router.routes()[0].path, "/b");
  EXPECT_EQ(router.routes()[1].path, "/a");
  EXPECT_EQ(router.routes()[2].path, "/c/{x}");
}

TEST(RouterTest, ListenerPatternCoversTheRoutesFirstSegmentsOnly) {
  Router router;
  router.add(route("GET", "/health"));
  router.add(route("GET", "/api/v1/vms"));
  router.add(route("GET", "/api/v1/vms/{vm_id}"));
  router.add(route("GET", "/metrics.txt"));
  std::regex re(router.path_pattern());
  for (std::string p : {"/health", "/api/v1/vms", "/api/v1/anything/else", "/api", "/metrics.txt", "/api/v1/x\ny"}) {
    EXPECT_TRUE(std::regex_match(p, re)) << p;
  }
  for (std::string p : {"/", "/index.html", "/assets/app.js", "/apix", "/healthz", "/metrics_txt"}) {
    EXPECT_FALSE(std::regex_match(p, re)) << p;
  }
  Router anything;
  anything.add(route("GET", "/{page}"));
  EXPECT_TRUE(std::regex_match(std::string("/index.html"), std::regex(anything.path_pattern())));
}

}  // namespace
}  // namespace mk::oma::api
