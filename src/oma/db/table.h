// Table<R>: how one record type maps to one table's columns, written once per record
// and used by every query on that table (the repositories').
//
// A Table lists its columns in order, each bound to a field of R: it builds the column
// list of a SELECT, reads a result row into an R, and binds an R's fields for an INSERT
// or an UPDATE. Fields may be std::string, int64_t, double, bool (stored 0/1), optional
// text or integer (NULL), or a NamedEnum (stored as its name, common/enum_names.h). A
// value a field cannot hold (an unknown enum name, text in an integer column) throws
// mk::Error naming the table, the row (by its key columns, the first `key_columns`) and
// the column, so a database written by a newer OMA or edited by hand is reported, never
// misread.
//
// Tables are immutable once built (usually function-local statics); thread-safe.
#pragma once

#include <fmt/format.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"

namespace mk::oma::db {

template <typename R>
class Table {
 public:
  struct Column {
    std::string name;
    std::function<void(const Row&, size_t, R&)> read;
    std::function<Value(const R&)> value;
  };

  Table(std::string name, std::vector<Column> columns, size_t key_columns)
      : name_(std::move(name)), columns_(std::move(columns)), key_columns_(key_columns) {
    for (const auto& c : columns_) list_ += (list_.empty() ? "" : ", ") + c.name;
  }

  const std::string& name() const { return name_; }

  // "SELECT <every column> FROM <table> <rest>"; rest: WHERE/ORDER BY with ? placeholders.
  std::string select(std::string_view rest = "") const {
    return fmt::format("SELECT {} FROM {} {}", list_, name_, rest);
  }

  std::vector<R> query(Database& db, std::string_view rest, const std::vector<Value>& params = {}) const {
    std::vector<R> out;
    for (const auto& row : db.query(select(rest), params)) out.push_back(read(row));
    return out;
  }

  std::optional<R> query_one(Database& db, std::string_view rest, const std::vector<Value>& params = {}) const {
    auto rows = db.query(select(rest), params);
    if (rows.empty()) return std::nullopt;
    return read(rows[0]);
  }

  // The row this transaction has just written (inserted or updated) and now reads back.
  // Inside a transaction that row can be missing only when the database aborted the
  // transaction under it (a Galera certification conflict that the driver reports at
  // the next statement): throws RetryableError so that Database::transaction() runs the
  // whole function again, instead of handing an empty optional to the caller. `what`
  // names the row in that message ("VM 42's placement").
  R query_written(Database& db, std::string_view rest, const std::vector<Value>& params,
                  std::string_view what) const {
    auto row = query_one(db, rest, params);
    if (!row)
      throw RetryableError(fmt::format("{} (table {}), written by this transaction, is gone: the transaction was "
                                       "aborted under it and runs again",
                                       what, name_));
    return std::move(*row);
  }

  // Inserts every column of `r`, plus `extra` columns the record does not carry.
  void insert(Database& db, const R& r, const std::vector<std::pair<std::string, Value>>& extra = {}) const {
    std::string cols = list_, marks;
    std::vector<Value> params;
    for (const auto& c : columns_) params.push_back(c.value(r));
    for (const auto& [name, v] : extra) {
      cols += ", " + name;
      params.push_back(v);
    }
    for (size_t i = 0; i < params.size(); ++i) marks += i ? ",?" : "?";
    db.exec(fmt::format("INSERT INTO {} ({}) VALUES ({})", name_, cols, marks), params);
  }

  // Sets `set` (column names) from `r` on the row with r's key; returns rows matched.
  int64_t update(Database& db, const R& r, const std::vector<std::string>& set) const {
    std::string assignments, where;
    std::vector<Value> params;
    for (const auto& name : set) {
      assignments += (assignments.empty() ? "" : ", ") + name + " = ?";
      params.push_back(column(name).value(r));
    }
    for (size_t i = 0; i < key_columns_; ++i) {
      where += (i ? " AND " : "") + columns_[i].name + " = ?";
      params.push_back(columns_[i].value(r));
    }
    return db.exec(fmt::format("UPDATE {} SET {} WHERE {}", name_, assignments, where), params);
  }

  // Every non-key column of `r` on the row with its key, or a new row if there is none.
  // Call inside a transaction.
  void upsert(Database& db, const R& r) const {
    std::vector<std::string> set;
    for (size_t i = key_columns_; i < columns_.size(); ++i) set.push_back(columns_[i].name);
    if (update(db, r, set) == 0) insert(db, r);
  }

  // A row selected with select(): its columns in this table's order.
  R read(const Row& row) const {
    R r;
    for (size_t i = 0; i < columns_.size(); ++i) {
      try {
        columns_[i].read(row, i, r);
      } catch (const std::exception& e) {
        throw Error(fmt::format("{} row {}: column {}: {} (written by a newer OMA, or edited by hand?)", name_,
                                key_of(row), columns_[i].name, e.what()));
      }
    }
    return r;
  }

 private:
  const Column& column(const std::string& name) const {
    for (const auto& c : columns_) {
      if (c.name == name) return c;
    }
    throw Error(fmt::format("table {} has no column {} (a bug in its repository)", name_, name));
  }

  std::string key_of(const Row& row) const {
    std::string out;
    for (size_t i = 0; i < key_columns_ && i < row.size(); ++i)
      out += fmt::format("{}{}={}", i ? ", " : "(", columns_[i].name, row.str(i).substr(0, 64));
    return out + ")";
  }

  std::string name_;
  std::vector<Column> columns_;
  size_t key_columns_;
  std::string list_;
};

// The column `name` bound to R's field `field`.
template <typename R, typename T>
typename Table<R>::Column column(std::string name, T R::*field) {
  typename Table<R>::Column c;
  c.name = std::move(name);
  if constexpr (std::is_same_v<T, std::string>) {
    c.read = [field](const Row& row, size_t i, R& r) { r.*field = row.str(i); };
    c.value = [field](const R& r) { return Value(r.*field); };
  } else if constexpr (std::is_same_v<T, int64_t>) {
    c.read = [field](const Row& row, size_t i, R& r) { r.*field = row.i64(i); };
    c.value = [field](const R& r) { return Value(r.*field); };
  } else if constexpr (std::is_same_v<T, double>) {
    c.read = [field](const Row& row, size_t i, R& r) { r.*field = row.dbl(i); };
    c.value = [field](const R& r) { return Value(r.*field); };
  } else if constexpr (std::is_same_v<T, bool>) {
    c.read = [field](const Row& row, size_t i, R& r) { r.*field = row.i64(i) != 0; };
    c.value = [field](const R& r) { return Value(int64_t{r.*field}); };
  } else if constexpr (std::is_same_v<T, std::optional<std::string>>) {
    c.read = [field](const Row& row, size_t i, R& r) { r.*field = row.opt(i); };
    c.value = [field](const R& r) { return r.*field ? Value(*(r.*field)) : Value(); };
  } else if constexpr (std::is_same_v<T, std::optional<int64_t>>) {
    c.read = [field](const Row& row, size_t i, R& r) {
      r.*field = row.is_null(i) ? std::nullopt : std::optional<int64_t>(row.i64(i));
    };
    c.value = [field](const R& r) { return r.*field ? Value(*(r.*field)) : Value(); };
  } else if constexpr (NamedEnum<T>) {
    c.read = [field](const Row& row, size_t i, R& r) {
      auto v = find_enum<T>(row.str(i));
      if (!v) throw Error(unknown_enum_message<T>(row.str(i)));
      r.*field = *v;
    };
    c.value = [field](const R& r) { return Value(enum_name(r.*field)); };
  } else {
    static_assert(!sizeof(T), "no column mapping for this field type");
  }
  return c;
}

}  // namespace mk::oma::db
