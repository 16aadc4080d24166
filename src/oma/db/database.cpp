#include "oma/db/database.h"

#include <fmt/format.h>

#include <charconv>
#include <chrono>

namespace mk::oma {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace mk::oma

namespace mk::oma::db {

int64_t Row::i64(size_t i) const {
  const auto& c = cols_.at(i);
  if (!c) return 0;
  int64_t v = 0;
  auto [p, ec] = std::from_chars(c->data(), c->data() + c->size(), v);
  if (ec != std::errc() || p != c->data() + c->size()) {
    // A double stored in an integer column (SQLite's dynamic typing) still reads.
    try {
      return static_cast<int64_t>(std::stod(*c));
    } catch (...) {
      throw Error(fmt::format("database column {} holds '{}', not an integer (database corrupted?)", i, *c));
    }
  }
  return v;
}

double Row::dbl(size_t i) const {
  const auto& c = cols_.at(i);
  if (!c) return 0;
  try {
    return std::stod(*c);
  } catch (...) {
    throw Error(fmt::format("database column {} holds '{}', not a number (database corrupted?)", i, *c));
  }
}

Rows Database::query(const std::string& sql, const std::vector<Value>& params) {
  std::lock_guard lock(mu_);
  return run(sql, params).rows;
}

int64_t Database::exec(const std::string& sql, const std::vector<Value>& params) {
  std::lock_guard lock(mu_);
  return run(sql, params).changed;
}

void Database::transaction(const std::function<void()>& fn) {
  std::lock_guard lock(mu_);
  if (depth_ > 0) {  // nested: join the outer transaction
    fn();
    return;
  }
  begin();
  depth_ = 1;
  try {
    fn();
    depth_ = 0;
    commit();
  } catch (...) {
    depth_ = 0;
    try {
      rollback();
    } catch (...) {
      // The original error matters more than a failed rollback (the connection will
      // discard the transaction anyway when it is closed).
    }
    throw;
  }
}

}  // namespace mk::oma::db

#include "oma/db/sqlite_database.h"

namespace mk::oma::db {

std::unique_ptr<Database> open_mariadb(const std::string& url);  // mariadb_database.cpp

std::unique_ptr<Database> open_database(const std::string& url) {
  if (url.rfind("sqlite:", 0) == 0) {
    std::string path = url.substr(7);
    if (path.empty() || path[0] != '/') throw UsageError("--database sqlite:PATH needs an absolute path");
    return std::make_unique<SqliteDatabase>(path);
  }
  if (url.rfind("mariadb://", 0) == 0) return open_mariadb(url);
  throw UsageError("--database: expected sqlite:/PATH or mariadb://USER@HOST:PORT/NAME?password_file=FILE");
}

}  // namespace mk::oma::db
