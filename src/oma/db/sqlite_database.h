// SqliteDatabase: the embedded default. One sqlite3 connection in WAL mode (readers do
// not block the writer), foreign keys on, a busy timeout so that a second process (the
// CLI reading the same file) waits instead of failing. Thread-safety as Database.
#pragma once

#include <sqlite3.h>

#include "oma/db/database.h"

namespace mk::oma::db {

class SqliteDatabase : public Database {
 public:
  // Opens (creating if missing) the database file at `path`, mode 0600.
  explicit SqliteDatabase(const std::string& path);
  ~SqliteDatabase() override;

  std::string engine() const override { return "sqlite"; }
  std::string describe() const override { return "sqlite:" + path_; }
  // One host, one clock: julianday('now') to the millisecond.
  std::string now_ms_sql() const override { return "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"; }

 protected:
  Result run(const std::string& sql, const std::vector<Value>& params) override;
  void begin() override { run("BEGIN IMMEDIATE", {}); }
  void commit() override { run("COMMIT", {}); }
  void rollback() override { run("ROLLBACK", {}); }

 private:
  std::string path_;
  sqlite3* db_ = nullptr;
};

}  // namespace mk::oma::db
