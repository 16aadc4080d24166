// The REST API: authentication on every route the OpenAPI document lists (no token,
// wrong token, revoked token; roles are roles_test.cpp's), the document matching the
// routes the server answers, hostile request bodies answered 4xx with the field named,
// secrets encrypted at rest and never returned, Prometheus metrics.
#include <gtest/gtest.h>

#include <regex>

#include "fake_vma.h"
#include "oma/crypto.h"
#include "oma_service.h"
#include "support/files.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::ApiClient;

struct ApiFixture : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-api"};
  std::unique_ptr<Oma> oma;
  std::unique_ptr<ApiClient> admin;
  void SetUp() override {
    // No VMA is needed here; jobs that reach it fail, which these tests do not start.
    oma = std::make_unique<Oma>(test::test_config(dir.file("data"), "http://127.0.0.1:9"));
    oma->start();
    admin = std::make_unique<ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
  }
  std::string make_token(const std::string& role) {
    auto r = admin->post("/api/v1/tokens", json{{"name", role + " token"}, {"role", role}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body["token"];
  }
  // Every documented operation, with path parameters filled with a well-formed id.
  std::vector<std::pair<std::string, std::string>> operations() {
    std::vector<std::pair<std::string, std::string>> ops;
    json doc = admin->get("/api/v1/openapi.json").body;
    for (const auto& [path, methods] : doc["paths"].items()) {
      std::string p = std::regex_replace(path, std::regex(R"(\{name\})"), "cloudstack.url");
      p = std::regex_replace(p, std::regex(R"(\{[a-z_]+\})"), "4210a4c2-6b57-4d4b-9d8e-0c1f2a3bffff");
      for (const auto& [m, op] : methods.items()) ops.emplace_back(m, p);
    }
    return ops;
  }
  static std::string upper(std::string s) {
    for (auto& c : s) c = static_cast<char>(toupper(c));
    return s;
  }
};

TEST_F(ApiFixture, AdminTokenFileIsPrivateAndOnlyWrittenOnce) {
  struct stat st {};
  ASSERT_EQ(::stat(dir.file("data/admin.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_EQ(oma->repos().config.count_tokens(), 1);
  // The database holds the hash, never the token.
  std::string token = test::read_admin_token(dir.file("data"));
  auto rows = oma->repos().database.query("SELECT token_hash FROM api_tokens");
  EXPECT_EQ(rows[0].str(0), sha256_hex(token));
  oma->stop();
  oma = std::make_unique<Oma>(test::test_config(dir.file("data"), "http://127.0.0.1:9"));
  oma->start();
  EXPECT_EQ(oma->repos().config.count_tokens(), 1);
  EXPECT_EQ(test::read_admin_token(dir.file("data")), token);
}

TEST_F(ApiFixture, EveryRouteButHealthNeedsALiveToken) {
  std::string revoked = make_token("operator");
  auto list = admin->get("/api/v1/tokens").body["tokens"];
  std::string revoked_id;
  for (const auto& t : list) {
    if (oma->repos().config.find_live_token(sha256_hex(revoked)) &&
        oma->repos().config.find_live_token(sha256_hex(revoked))->token_id == t["token_id"])
      revoked_id = t["token_id"];
  }
  ASSERT_EQ(admin->del("/api/v1/tokens/" + revoked_id).status, 200);

  auto ops = operations();
  ASSERT_GE(ops.size(), 19u);
  ApiClient anon(oma->api_port(), ""), wrong(oma->api_port(), "mko_" + std::string(64, '0')),
      gone(oma->api_port(), revoked);
  json doc = admin->get("/api/v1/openapi.json").body;
  for (const auto& [m, path] : ops) {
    std::string method = upper(m);
    std::string body = method == "GET" || method == "DELETE" ? "" : "{}";
    SCOPED_TRACE(method + " " + path);
    if (path == "/health") {
      EXPECT_EQ(anon.call(method, path, body).status, 200);
      continue;
    }
    for (ApiClient* c : {&anon, &wrong, &gone}) {
      auto r = c->call(method, path, body);
      EXPECT_EQ(r.status, 401) << r.raw;
      EXPECT_TRUE(r.body.is_object() && r.body.contains("error")) << r.raw;
    }
  }
  EXPECT_EQ(admin->get("/api/v1/vms").status, 200);
}

TEST_F(ApiFixture, OpenApiDocumentMatchesTheServer) {
  // Every documented operation is routed (an unrouted one answers "no such route").
  for (const auto& [m, path] : operations()) {
    std::string method = upper(m);
    auto r = admin->call(method, path, method == "GET" || method == "DELETE" ? "" : "{}");
    SCOPED_TRACE(method + " " + path);
    EXPECT_NE(r.status, 405);
    if (r.body.is_object() && r.body.contains("error")) {
      EXPECT_EQ(r.body["error"].get<std::string>().find("no such route"), std::string::npos) << r.raw;
    }
  }
  // And undocumented ones are not.
  for (std::string p : {"/api/v1/nope", "/api/v2/vms", "/api/v1/vms/x/y/z"}) {
    auto r = admin->get(p);
    EXPECT_EQ(r.status, 404);
    EXPECT_NE(r.body["error"].get<std::string>().find("no such route"), std::string::npos) << r.raw;
  }
  json doc = admin->get("/api/v1/openapi.json").body;
  EXPECT_EQ(doc["openapi"], "3.0.3");
  json body = doc["paths"]["/api/v1/vms"]["post"]["requestBody"]["content"]["application/json"];
  ASSERT_EQ(body["schema"], json({{"$ref", "#/components/schemas/NewVm"}})) << body.dump();
  EXPECT_EQ(doc["components"]["schemas"]["NewVm"]["additionalProperties"], false);
  // Every operation is described: operationId, tag, description, a schema for every response.
  for (const auto& [path, methods] : doc["paths"].items()) {
    for (const auto& [m, op] : methods.items()) {
      SCOPED_TRACE(m + " " + path);
      EXPECT_FALSE(op.value("operationId", "").empty());
      EXPECT_EQ(op["tags"].size(), 1u);
      EXPECT_FALSE(op.value("description", "").empty());
      for (const auto& [status, r] : op["responses"].items()) {
        ASSERT_TRUE(r.contains("content")) << status;
        for (const auto& [media, c] : r["content"].items()) EXPECT_TRUE(c.contains("schema")) << status;
      }
    }
  }
}

TEST_F(ApiFixture, HostileBodiesGetA4xxNamingTheField) {
  const std::string vm = test::test_vm_uuid(1);
  auto with = [&](const std::function<void(json&)>& edit) {
    json b = test::vm_body(vm, 2, 1048576);
    edit(b);
    return b.dump();
  };
  struct Case {
    std::string body, field;
  };
  std::vector<Case> cases = {
      {with([](json& b) { b["cpus"] = "2"; }), "cpus"},
      {with([](json& b) { b["cpus"] = 2.5; }), "cpus"},
      {with([](json& b) { b["cpus"] = -1; }), "cpus"},
      {with([](json& b) { b["memory_mb"] = json(18446744073709551615ull); }), "memory_mb"},
      {with([](json& b) { b["extra"] = 1; }), "extra"},
      {with([](json& b) { b["disks"][1]["evil"] = true; }), "disks[1].evil"},
      {with([](json& b) { b["vm_id"] = "../../etc/passwd"; }), "vm_id"},
      {with([](json& b) { b["vm_id"] = "4210A4C2-6B57-4D4B-9D8E-0C1F2A3B0001"; }), "vm_id"},
      {with([](json& b) { b["name"] = "a/b"; }), "name"},
      {with([](json& b) { b["name"] = std::string("a\0b", 3); }), "name"},
      {with([](json& b) { b["name"] = "a\nb"; }), "name"},
      {with([](json& b) { b["name"] = std::string(300, 'x'); }), "name"},
      {with([](json& b) { b["disks"][0]["key"] = "20/0"; }), "disks[0].key"},
      {with([](json& b) { b["disks"][0]["unit"] = 256; }), "disks[0].unit"},
      {with([](json& b) { b["disks"][1]["capacity_bytes"] = 0; }), "disks[1].capacity_bytes"},
      {with([](json& b) { b["disks"] = "none"; }), "disks"},
      {with([](json& b) { b["disks"] = json::array(); }), "disks"},
      {with([](json& b) { b.erase("name"); }), "name"},
      {with([](json& b) { b["power_state"] = "exploded"; }), "power_state"},
      {"[1,2,3]", "body"},
      {"not json", "body"},
      {"", "body"},
      {std::string(20, '[') + std::string(20, ']'), "body"},
      {R"({"vm_id": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": 1}}}}}}}}})", "body"},
  };
  for (const auto& c : cases) {
    auto r = admin->post("/api/v1/vms", c.body);
    SCOPED_TRACE(c.body.substr(0, 120));
    EXPECT_EQ(r.status, 400) << r.raw;
    ASSERT_TRUE(r.body.is_object()) << r.raw;
    EXPECT_EQ(r.body.value("field", ""), c.field) << r.raw;
  }
  EXPECT_TRUE(oma->repos().vms.list_vms().empty());

  // Oversized: refused before parsing, still JSON.
  auto big = admin->post("/api/v1/vms", with([](json& b) { b["name"] = std::string(70000, 'x'); }));
  EXPECT_EQ(big.status, 413);
  EXPECT_TRUE(big.body.is_object() && big.body.contains("error")) << big.raw;

  // Duplicate units: a conflict, not stored.
  auto dup = admin->post("/api/v1/vms", with([](json& b) { b["disks"][1]["unit"] = 0; }));
  EXPECT_EQ(dup.status, 409) << dup.raw;

  // Path parameters are validated too.
  auto bad = admin->get("/api/v1/jobs/not-a-uuid%0A");
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_EQ(bad.body.value("field", ""), "job_id");
  EXPECT_EQ(admin->get("/api/v1/jobs/..%2F..%2Fetc").status, 404);  // a decoded '/' matches no route
  EXPECT_EQ(admin->get("/api/v1/jobs?status=bogus").status, 400);
  EXPECT_EQ(admin->post("/api/v1/jobs", R"({"vm_id":")" + vm + R"(","kind":"weekly"})").body.value("field", ""), "kind");
  EXPECT_EQ(admin->put("/api/v1/settings/x%00y", R"({"value":"v"})").body.value("field", ""), "name");
  EXPECT_EQ(admin->post("/api/v1/tokens", R"({"name":"x","role":"root"})").body.value("field", ""), "role");
  // A well-formed body works after all that.
  EXPECT_EQ(admin->post("/api/v1/vms", with([](json&) {})).status, 201);
}

TEST_F(ApiFixture, SecretsAreEncryptedAtRestAndNeverReturned) {
  const std::string secret = "s3cr3t-Password!";
  ASSERT_EQ(admin->put("/api/v1/settings/vcenter.password", json{{"value", secret}}.dump()).status, 200);
  ASSERT_EQ(admin->put("/api/v1/settings/cloudstack.url", json{{"value", "http://cs:8080"}}.dump()).status, 200);
  auto stored = oma->repos().config.get_setting("vcenter.password");
  ASSERT_TRUE(stored);
  EXPECT_TRUE(stored->encrypted);
  EXPECT_EQ(stored->value.find(secret), std::string::npos);
  SecretBox box(dir.file("data/secrets.key"));
  EXPECT_EQ(box.open(stored->value, "settings/vcenter.password"), secret);
  // Bound to its setting: the same value moved to another one does not open.
  EXPECT_THROW(box.open(stored->value, "settings/cloudstack.secret_key"), Error);
  auto listed = admin->get("/api/v1/settings");
  EXPECT_EQ(listed.raw.find(secret), std::string::npos);
  EXPECT_NE(listed.raw.find("http://cs:8080"), std::string::npos);
  // An altered ciphertext does not decrypt.
  std::string tampered = stored->value;
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'A' ? 'B' : 'A';
  EXPECT_THROW(box.open(tampered, "settings/vcenter.password"), Error);
}

TEST_F(ApiFixture, MetricsInPrometheusTextFormat) {
  auto r = admin->get("/metrics");
  EXPECT_EQ(r.status, 200);
  for (std::string m : {"oma_bytes_moved_total 0", "oma_exports 0", "oma_poller_errors_total 0",
                        "# TYPE oma_jobs gauge", "oma_throughput_bytes_per_second 0"}) {
    EXPECT_NE(r.raw.find(m), std::string::npos) << m << "\n" << r.raw;
  }
}

}  // namespace
}  // namespace mk::oma
