// The schema and the repositories on SQLite: every scenario of repository_scenarios.h
// (migrations here; each repository's in its own file), each on a fresh database.
#include <gtest/gtest.h>

#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "repository_scenarios.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

namespace {

void MigrationsApplyOnceAndRecordTheirVersion(db::Database& database, Repositories&) {
  EXPECT_EQ(db::schema_version(database), db::migrations().back().version);
  EXPECT_EQ(db::migrate(database), 0);  // second start: nothing to do
}

void RefusesADatabaseFromANewerOma(db::Database& database, Repositories&) {
  database.exec("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)");
  EXPECT_THROW(db::migrate(database), Error);
}

}  // namespace

Scenarios migration_scenarios() {
  return {{"MigrationsApplyOnceAndRecordTheirVersion", MigrationsApplyOnceAndRecordTheirVersion},
          {"RefusesADatabaseFromANewerOma", RefusesADatabaseFromANewerOma}};
}

const Scenarios& repository_scenarios() {
  static const Scenarios all = [] {
    Scenarios out;
    for (auto part : {migration_scenarios, vm_repository_scenarios, job_repository_scenarios,
                      storage_repository_scenarios, config_repository_scenarios, vma_repository_scenarios,
                      schedule_repository_scenarios, sealed_value_scenarios, node_repository_scenarios,
                      placement_repository_scenarios, boot_check_repository_scenarios,
                      inspection_repository_scenarios, nbd_ca_repository_scenarios}) {
      for (auto& s : part()) out.push_back(std::move(s));
    }
    return out;
  }();
  return all;
}

namespace {

class SqliteRepositories : public ::testing::TestWithParam<size_t> {};

TEST_P(SqliteRepositories, Scenario) {
  mk::test::TempDir dir("mk-oma-db");
  db::SqliteDatabase database(dir.file("oma.db"));
  db::migrate(database);
  Repositories repos(database);
  repository_scenarios()[GetParam()].second(database, repos);
}

INSTANTIATE_TEST_SUITE_P(Repositories, SqliteRepositories, ::testing::Range<size_t>(0, repository_scenarios().size()),
                         [](const auto& info) { return repository_scenarios()[info.param].first; });

TEST(SqliteRepositories, ReopenedDatabaseNeedsNoMigration) {
  mk::test::TempDir dir("mk-oma-db");
  { db::SqliteDatabase a(dir.file("oma.db")); EXPECT_EQ(db::migrate(a), static_cast<int>(db::migrations().size())); }
  db::SqliteDatabase b(dir.file("oma.db"));
  EXPECT_EQ(db::migrate(b), 0);
}

}  // namespace
}  // namespace mk::oma::test
