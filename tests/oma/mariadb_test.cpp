// The schema and the data layer on a real MariaDB server started by the test: every
// Store scenario of store_test.cpp, each on its own fresh database, plus what only a
// client/server database shows (two connections, one active job per VM between them).
#include <gtest/gtest.h>

#include <cctype>

#include "mariadb_server.h"
#include "oma/db/migrations.h"
#include "oma/errors.h"
#include "store_scenarios.h"

namespace mk::oma {
namespace {

TEST(MariadbStore, EveryStoreScenarioOnARealServer) {
  test::MariadbServer server;
  int n = 0;
  for (const auto& [name, scenario] : store_scenarios()) {
    SCOPED_TRACE(name);
    auto database = db::open_database(server.create_database("oma_" + std::to_string(n++)));
    EXPECT_EQ(database->engine(), "mariadb");
    db::migrate(*database);
    Store store(*database);
    scenario(*database, store);
  }

  // Two OMA connections to one database (e.g. the service and a CLI): the active-job
  // claim is decided by the server, not by either process.
  std::string url = server.create_database("oma_shared");
  auto a = db::open_database(url), b = db::open_database(url);
  db::migrate(*a);
  EXPECT_EQ(db::migrate(*b), 0);
  Store sa(*a), sb(*b);
  VmRecord vm;
  vm.vm_id = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001";
  vm.name = "shared";
  sa.add_vm(vm, {DiskRecord{vm.vm_id, "2000", 0, "d", 1048576}});
  JobRecord j;
  j.vm_id = vm.vm_id;
  j.kind = "full";
  j.status = j.phase = "preparing";
  j.job_id = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b1001";
  sa.create_job(j, {});
  j.job_id = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b1002";
  EXPECT_THROW(sb.create_job(j, {}), Conflict);
  EXPECT_EQ(sb.active_jobs().size(), 1u);
}

TEST(MariadbStore, RejectsMalformedUrls) {
  EXPECT_THROW(db::open_database("mariadb://oma@host/db;drop"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://host/db"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://oma@host:99999999/db"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://oma@host/db?password=x"), UsageError);
  EXPECT_THROW(db::open_database("postgres://x"), UsageError);
}

}  // namespace
}  // namespace mk::oma
