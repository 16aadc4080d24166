#include "oma/db/database.h"

#include <fmt/format.h>

#include <charconv>

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
