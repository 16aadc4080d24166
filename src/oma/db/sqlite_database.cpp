#include "oma/db/sqlite_database.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mk::oma::db {
namespace {

// Statements are named in errors by their first words only: enough to find them in
// the code, and never a bound value.
struct Stmt {
  sqlite3_stmt* s = nullptr;
  ~Stmt() { sqlite3_finalize(s); }
};

}  // namespace

SqliteDatabase::SqliteDatabase(const std::string& path) : path_(path) {
  // Create the file ourselves so that it is never world-readable (it holds hashes and
  // encrypted credentials).
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw Error(fmt::format("cannot open the OMA database {}: {} (check --data-dir and its permissions)", path,
                            std::strerror(errno)));
  }
  ::close(fd);
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr) != SQLITE_OK) {
    std::string msg = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw Error(fmt::format("cannot open the OMA database {}: {}", path, msg));
  }
  sqlite3_busy_timeout(db_, 10000);
  run("PRAGMA journal_mode=WAL", {});
  run("PRAGMA foreign_keys=ON", {});
  run("PRAGMA synchronous=NORMAL", {});
}

SqliteDatabase::~SqliteDatabase() { sqlite3_close(db_); }

Database::Result SqliteDatabase::run(const std::string& sql, const std::vector<Value>& params) {
  Stmt st;
  if (sqlite3_prepare_v2(db_, sql.c_str(), static_cast<int>(sql.size()), &st.s, nullptr) != SQLITE_OK) {
    throw Error(fmt::format("{}: cannot prepare '{}': {}", describe(), sql_head(sql), sqlite3_errmsg(db_)));
  }
  for (size_t i = 0; i < params.size(); ++i) {
    int idx = static_cast<int>(i + 1);
    const Value& v = params[i];
    int rc = SQLITE_OK;
    if (std::holds_alternative<std::monostate>(v)) rc = sqlite3_bind_null(st.s, idx);
    else if (auto* n = std::get_if<int64_t>(&v)) rc = sqlite3_bind_int64(st.s, idx, *n);
    else if (auto* d = std::get_if<double>(&v)) rc = sqlite3_bind_double(st.s, idx, *d);
    else {
      const auto& t = std::get<std::string>(v);
      rc = sqlite3_bind_text(st.s, idx, t.data(), static_cast<int>(t.size()), SQLITE_TRANSIENT);
    }
    if (rc != SQLITE_OK) throw Error(fmt::format("{}: cannot bind parameter {} of '{}'", describe(), idx, sql_head(sql)));
  }
  Result r;
  for (;;) {
    int rc = sqlite3_step(st.s);
    if (rc == SQLITE_DONE) break;
    if (rc == SQLITE_ROW) {
      int n = sqlite3_column_count(st.s);
      std::vector<std::optional<std::string>> cols;
      cols.reserve(n);
      for (int c = 0; c < n; ++c) {
        if (sqlite3_column_type(st.s, c) == SQLITE_NULL) {
          cols.emplace_back(std::nullopt);
        } else {
          auto* p = reinterpret_cast<const char*>(sqlite3_column_text(st.s, c));
          cols.emplace_back(std::string(p, sqlite3_column_bytes(st.s, c)));
        }
      }
      r.rows.emplace_back(std::move(cols));
      continue;
    }
    std::string msg = fmt::format("{}: '{}' failed: {}", describe(), sql_head(sql), sqlite3_errmsg(db_));
    if (sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_UNIQUE ||
        sqlite3_extended_errcode(db_) == SQLITE_CONSTRAINT_PRIMARYKEY) {
      throw ConstraintError(msg);
    }
    throw Error(msg);
  }
  r.changed = sqlite3_changes(db_);
  return r;
}

}  // namespace mk::oma::db
