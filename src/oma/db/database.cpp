#include "oma/db/database.h"

#include <fmt/format.h>

#include <charconv>
#include <chrono>
#include <random>
#include <thread>

#include "common/log.h"

namespace mk::oma {

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace mk::oma

namespace mk::oma::db {

std::string sql_head(const std::string& sql) { return sql.size() > 60 ? sql.substr(0, 60) + "..." : sql; }

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

template <typename F>
auto Database::with_retries(const char* what, F once) -> decltype(once()) {
  thread_local std::minstd_rand jitter(std::random_device{}());
  for (int attempt = 1;; ++attempt) {
    try {
      return once();
    } catch (const RetryableError& e) {
      if (attempt >= kTransactionAttempts)
        throw RetryableError(fmt::format("{} (the {} was aborted {} times in a row: the database is overloaded with "
                                         "conflicting changes, or keeps losing its connection; try again)",
                                         e.what(), what, attempt));
      ++retries_;
      // Exponential back-off with jitter, so that two nodes that conflicted do not meet
      // again at once: 5-10 ms, 10-20 ms, ... (at most about 1.3 s in all).
      auto base = std::chrono::milliseconds(5 << (attempt - 1));
      auto wait = base + std::chrono::milliseconds(jitter() % (base.count() + 1));
      log::warn("database {}: {} aborted ({}); running it again in {} ms (attempt {} of {})", describe(), what,
                e.what(), wait.count(), attempt + 1, kTransactionAttempts);
      std::this_thread::sleep_for(wait);
    }
  }
}

Rows Database::query(const std::string& sql, const std::vector<Value>& params) {
  std::lock_guard lock(mu_);
  if (depth_ > 0) return run(sql, params).rows;  // the transaction retries, not the statement
  return with_retries("statement", [&] { return run(sql, params).rows; });
}

int64_t Database::exec(const std::string& sql, const std::vector<Value>& params) {
  std::lock_guard lock(mu_);
  if (depth_ > 0) return run(sql, params).changed;
  return with_retries("statement", [&] { return run(sql, params).changed; });
}

void Database::transaction(const std::function<void()>& fn) {
  std::lock_guard lock(mu_);
  if (depth_ > 0) {  // nested: join the outer transaction (which retries the whole)
    fn();
    return;
  }
  with_retries("transaction", [&] {
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
  });
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
