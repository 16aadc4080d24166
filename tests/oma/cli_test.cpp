// The operator CLI (`migratekit vms | replicate | jobs ...`) against a running OMA:
// the binary this build produced, over the REST API, token from a file.
#include <gtest/gtest.h>

#include <filesystem>

#include "fake_vma.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/migratekit_runner.h"

namespace mk::oma {
namespace {

using nlohmann::json;

struct CliFixture : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-cli"};
  std::unique_ptr<test::FakeVma> vma;
  std::unique_ptr<Oma> oma;
  std::string api, token_file;
  void SetUp() override {
    std::filesystem::create_directories(dir.file("data"));  // the OMA's own NBD key: the fake writes what it reports
    vma = std::make_unique<test::FakeVma>(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
    vma->set_auto_complete(true);
    oma = std::make_unique<Oma>(test::test_config(dir.file("data"), vma->url()));
    oma->start();
    api = "http://127.0.0.1:" + std::to_string(oma->api_port());
    token_file = dir.file("data/admin.token");
    test::ApiClient c(oma->api_port(), test::read_admin_token(dir.file("data")));
    ASSERT_EQ(c.post("/api/v1/vms", test::vm_body(test::test_vm_uuid(1), 2, 1048576).dump()).status, 201);
  }
  mk::test::RunResult cli(std::vector<std::string> args) {
    args.insert(args.end(), {"--api", api, "--token-file", token_file});
    return mk::test::run_migratekit(args);
  }
};

TEST_F(CliFixture, ReplicateWatchListShowCancel) {
  auto vms = cli({"vms"});
  EXPECT_EQ(vms.exit_code, 0) << vms.err;
  EXPECT_NE(vms.out.find(test::test_vm_uuid(1)), std::string::npos) << vms.out;

  auto rep = cli({"replicate", test::test_vm_uuid(1), "--watch", "--interval-ms", "50"});
  EXPECT_EQ(rep.exit_code, 0) << rep.err;
  std::string job = rep.out.substr(0, 36);
  EXPECT_NE(rep.out.find("completed"), std::string::npos) << rep.out;
  EXPECT_EQ(oma->repos().jobs.get_job(job).status, JobStatus::Completed);

  auto list = cli({"jobs", "list", "--vm", test::test_vm_uuid(1)});
  EXPECT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find(job), std::string::npos);
  auto show = cli({"jobs", "show", job});
  EXPECT_EQ(show.exit_code, 0) << show.err;
  EXPECT_EQ(json::parse(show.out)["status"], "completed");
  auto cancel = cli({"jobs", "cancel", job});
  EXPECT_EQ(cancel.exit_code, 2);  // already ended: the API's 409, one line
  EXPECT_NE(cancel.err.find("already ended"), std::string::npos) << cancel.err;
}

TEST_F(CliFixture, CutoverAndTestFailoverVerbs) {
  const std::string vm = test::test_vm_uuid(1);
  vma->add_source_vm(vm, "vm-0001", true);
  auto early = cli({"cutover", vm});
  EXPECT_EQ(early.exit_code, 2) << early.out;  // nothing replicated yet: the API's 400
  EXPECT_NE(early.err.find("full replication first"), std::string::npos) << early.err;
  ASSERT_EQ(cli({"replicate", vm, "--watch", "--interval-ms", "50"}).exit_code, 0);

  auto tf = cli({"test-failover", vm});
  EXPECT_EQ(tf.exit_code, 2);  // the local backend has no CloudStack to boot a copy in
  EXPECT_NE(tf.err.find("cloudstack"), std::string::npos) << tf.err;

  auto cut = cli({"cutover", vm, "--shutdown-timeout", "30", "--watch", "--interval-ms", "50"});
  EXPECT_EQ(cut.exit_code, 0) << cut.err;
  EXPECT_NE(cut.out.find("final-pass"), std::string::npos) << cut.out;
  EXPECT_NE(cut.out.find("mark-cut-over"), std::string::npos) << cut.out;
  EXPECT_EQ(oma->repos().vms.get_vm(vm).status, VmStatus::CutOver);
  EXPECT_FALSE(vma->powered_on(vm));
  EXPECT_EQ(oma->repos().jobs.get_job(cut.out.substr(0, 36)).kind, JobKind::Cutover);

  auto cleanup = cli({"test-failover", vm, "--cleanup"});
  EXPECT_EQ(cleanup.exit_code, 2);
  EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
}

TEST_F(CliFixture, TokenProblemsAreClear) {
  auto missing = mk::test::run_migratekit({"vms", "--api", api, "--token-file", dir.file("nope")});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("no API token"), std::string::npos) << missing.err;
  mk::test::write_at(dir.file("wrong.token"), 0, "mko_" + std::string(64, '1') + "\n");
  auto wrong = mk::test::run_migratekit({"vms", "--api", api, "--token-file", dir.file("wrong.token")});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.err.find("401"), std::string::npos) << wrong.err;
  auto bad_vm = cli({"replicate", "not-a-uuid"});
  EXPECT_EQ(bad_vm.exit_code, 2);
  EXPECT_NE(bad_vm.err.find("vm_id"), std::string::npos) << bad_vm.err;
}

}  // namespace
}  // namespace mk::oma
