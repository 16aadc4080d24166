// Roles against the real `oma` binary: every documented operation names the least role
// its token needs (x-required-role), and a viewer, an operator and an admin token get
// 403 exactly where their role is below it, before the handler runs; an operator can no
// longer cut over or rewrite network mappings. Revoking the last admin token does not
// lock admins out: `oma --reset-admin-token` on the OMA's machine makes a new one in
// DATA/admin.token (owner-only), which the running OMA accepts, and never prints it.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <regex>

#include "oma/api/openapi.h"
#include "oma/db/config_repository.h"
#include "oma_process.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::ApiClient;

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(toupper(c));
  return s;
}

struct RolesFixture : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-roles"};
  std::string data = dir.file("data"), log = dir.file("oma.log");
  // No VMA: nothing here reaches one.
  std::unique_ptr<test::OmaProcess> oma = std::make_unique<test::OmaProcess>(data, "http://127.0.0.1:9", log);
  ApiClient admin{oma->port, test::read_admin_token(data)};

  json make_token(const std::string& role) {
    auto r = admin.post("/api/v1/tokens", json{{"name", role + " token"}, {"role", role}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body;
  }
  std::string admin_token_id() {
    json tokens = admin.get("/api/v1/tokens").body["tokens"];
    for (const auto& t : tokens) {
      if (t["role"] == "admin" && t["revoked_at"].is_null()) return t["token_id"];
    }
    return "";
  }
};

TEST_F(RolesFixture, EachTokenIsRefusedExactlyWhereItsRoleIsBelowTheOperations) {
  std::map<std::string, std::unique_ptr<ApiClient>> clients;
  for (std::string role : {"viewer", "operator"}) {
    clients[role] = std::make_unique<ApiClient>(oma->port, make_token(role)["token"]);
  }
  clients["admin"] = std::make_unique<ApiClient>(oma->port, test::read_admin_token(data));

  json doc = admin.get("/api/v1/openapi.json").body;
  std::map<std::string, std::string> required;  // "POST /api/v1/vms/{vm_id}/cutover" -> "admin"
  int checked = 0;
  for (const auto& [path, methods] : doc["paths"].items()) {
    std::string p = std::regex_replace(path, std::regex(R"(\{name\})"), "cloudstack.url");
    p = std::regex_replace(p, std::regex(R"(\{[a-z_]+\})"), "4210a4c2-6b57-4d4b-9d8e-0c1f2a3bffff");
    for (const auto& [m, op] : methods.items()) {
      std::string method = upper(m);
      SCOPED_TRACE(method + " " + path);
      if (path == "/health" || op["operationId"] == "enrollVma") {  // no bearer token
        EXPECT_FALSE(op.contains("x-required-role"));
        continue;
      }
      ASSERT_TRUE(op.contains("x-required-role")) << op.dump();
      std::string needed = op["x-required-role"];
      required[method + " " + path] = needed;
      EXPECT_NE(op["description"].get<std::string>().find("Required role: " + needed), std::string::npos);
      TokenRole need = parse_enum<TokenRole>(needed, "x-required-role");
      EXPECT_EQ(op["responses"].contains("403"), need != TokenRole::Viewer) << op["responses"].dump();
      for (const auto& [role, client] : clients) {
        // Bodies the handlers would accept: a 403 must come from the role, not the input.
        auto r = client->call(method, p, method == "GET" || method == "DELETE" ? "" : "{}");
        bool may = role_grants(parse_enum<TokenRole>(role, "role"), need);
        EXPECT_EQ(r.status == 403, !may) << role << ": " << r.raw;
        if (!may) {
          EXPECT_NE(r.body.value("error", "").find("needs a token of role " + needed), std::string::npos);
        }
        ++checked;
      }
    }
  }
  EXPECT_GE(checked, 3 * 38);
  // Finding 6 of issue 13: what each role may do.
  EXPECT_EQ(required["POST /api/v1/vms/{vm_id}/cutover"], "admin");
  EXPECT_EQ(required["PUT /api/v1/network-mappings"], "admin");
  EXPECT_EQ(required["POST /api/v1/vmas/{vma_id}/approve"], "admin");
  EXPECT_EQ(required["PUT /api/v1/settings/cloudstack"], "admin");
  EXPECT_EQ(required["POST /api/v1/tokens"], "admin");
  EXPECT_EQ(required["POST /api/v1/jobs"], "operator");
  EXPECT_EQ(required["PUT /api/v1/vms/{vm_id}/schedule"], "operator");
  EXPECT_EQ(required["POST /api/v1/vms/{vm_id}/test-failover"], "operator");
  EXPECT_EQ(required["GET /api/v1/vms"], "viewer");
  EXPECT_EQ(required["GET /api/v1/events"], "viewer");
}

TEST_F(RolesFixture, ARefusedRequestChangesNothing) {
  ApiClient viewer(oma->port, make_token("viewer")["token"]), op(oma->port, make_token("operator")["token"]);
  std::string vm = test::test_vm_uuid(1);
  std::string body = test::vm_body(vm, 1, 1048576).dump();
  EXPECT_EQ(viewer.post("/api/v1/vms", body).status, 403);
  EXPECT_EQ(admin.get("/api/v1/vms/" + vm).status, 404);
  ASSERT_EQ(op.post("/api/v1/vms", body).status, 201);

  json mappings = {{"mappings", json::array({{{"source_network", "VM Network"}, {"target_network_id", "net-1"}}})}};
  auto before = admin.get("/api/v1/network-mappings");
  EXPECT_EQ(op.put("/api/v1/network-mappings", mappings.dump()).status, 403);
  EXPECT_EQ(admin.get("/api/v1/network-mappings").body, before.body);
  EXPECT_EQ(admin.put("/api/v1/network-mappings", mappings.dump()).status, 200);  // the body was valid
  auto cut = op.post("/api/v1/vms/" + vm + "/cutover", "{}");
  EXPECT_EQ(cut.status, 403) << cut.raw;
  EXPECT_EQ(admin.get("/api/v1/jobs?vm_id=" + vm).body["jobs"].size(), 0u);
}

TEST_F(RolesFixture, ResetAdminTokenAfterTheLastAdminTokenIsRevoked) {
  std::string old_token = test::read_admin_token(data);
  std::string operator_token = make_token("operator")["token"];
  std::string id = admin_token_id();
  ASSERT_FALSE(id.empty());
  ASSERT_EQ(admin.del("/api/v1/tokens/" + id).status, 200);
  EXPECT_EQ(admin.get("/api/v1/tokens").status, 401);  // no admin is left

  std::string out, err_path = dir.file("reset.err");
  ASSERT_EQ(run_capture({OMA_BIN, "--data-dir", data, "--reset-admin-token"}, out, err_path), 0) << mk::test::read_file_or_empty(err_path);
  EXPECT_NE(out.find(data + "/admin.token"), std::string::npos) << out;

  std::string token = test::read_admin_token(data);
  EXPECT_NE(token, old_token);
  struct stat st {};
  ASSERT_EQ(::stat((data + "/admin.token").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  // The running OMA accepts it at once; the token appears nowhere but in the file.
  ApiClient fresh(oma->port, token);
  auto tokens = fresh.get("/api/v1/tokens");
  ASSERT_EQ(tokens.status, 200) << tokens.raw;
  EXPECT_EQ(ApiClient(oma->port, old_token).get("/api/v1/vms").status, 401);
  EXPECT_EQ(ApiClient(oma->port, operator_token).get("/api/v1/vms").status, 200);
  EXPECT_EQ(tokens.raw.find(token), std::string::npos);
  oma.reset();  // flushes its log
  for (const auto& text : {out, mk::test::read_file_or_empty(err_path), mk::test::read_file_or_empty(log)}) EXPECT_EQ(text.find(token), std::string::npos);
}

TEST(Roles, EachRoleMayWhatTheOnesBelowItMay) {
  auto grants = [](const char* held, const char* needed) {
    return role_grants(parse_enum<TokenRole>(held, "held"), parse_enum<TokenRole>(needed, "needed"));
  };
  EXPECT_TRUE(grants("admin", "operator") && grants("admin", "viewer") && grants("operator", "viewer"));
  EXPECT_TRUE(grants("viewer", "viewer") && grants("operator", "operator") && grants("admin", "admin"));
  EXPECT_FALSE(grants("viewer", "operator") || grants("viewer", "admin") || grants("operator", "admin"));
}

TEST(Roles, ARouteWithAnUnknownRoleIsRefusedAtStartUp) {
  static const api::Tag tag{"T", "t"};
  api::Route r{.method = "GET", .path = "/api/v1/x", .operation_id = "getX", .tag = &tag, .summary = "s",
               .description = "d", .role = "root", .responses = {{200, "ok"}}};
  try {
    api::check_declaration(r);
    ADD_FAILURE() << "a route with role \"root\" was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("role \"root\""), std::string::npos) << e.what();
  }
  r.role = "viewer";
  EXPECT_EQ(api::required_token_role(r), TokenRole::Viewer);
  r.role = "pairing";
  EXPECT_EQ(api::required_token_role(r), std::nullopt);
}

TEST(ResetAdminToken, RefusesADataDirectoryWithoutADatabase) {
  mk::test::TempDir dir("mk-oma-reset");
  std::string out, err_path = dir.file("reset.err");
  EXPECT_EQ(run_capture({OMA_BIN, "--data-dir", dir.file("typo"), "--reset-admin-token"}, out, err_path), 2);
  EXPECT_NE(mk::test::read_file_or_empty(err_path).find("no OMA database"), std::string::npos) << mk::test::read_file_or_empty(err_path);
  EXPECT_FALSE(std::filesystem::exists(dir.file("typo")));
}

}  // namespace
}  // namespace mk::oma
