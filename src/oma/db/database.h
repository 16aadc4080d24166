// Database: one SQL connection to the OMA's state, SQLite (embedded, WAL) or MariaDB.
//
// The OMA speaks one SQL dialect to both engines: the schema uses only VARCHAR(n),
// BIGINT, DOUBLE and TEXT columns, primary keys and UNIQUE constraints, and statements
// use `?` placeholders bound as parameters (never values spliced into SQL). What the
// two engines do differently (connection, transactions, error codes) lives behind this
// interface; everything above it (migrations, the repositories) is shared.
//
// A Database owns its connection. It is thread-safe: every call takes the connection's
// mutex, and transaction() holds it for the whole transaction, so a transaction sees no
// statement from another thread.
//
// Conflicts (MariaDB Galera, issue 18). Galera is optimistic: two nodes' transactions
// that change the same rows both run, and the one certified second fails at COMMIT (or
// at its next statement) with a deadlock error; InnoDB's own deadlocks look the same. The
// engine reports these as RetryableError, and transaction() runs the whole function
// again, from BEGIN, a bounded number of times (kTransactionAttempts, short randomised
// back-off), logging each retry. So a function passed to transaction() must be safe to
// run again: it assigns its results (never appends to what an earlier attempt left) and
// does nothing outside the database. A statement outside a transaction is retried the
// same way.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "common/error.h"

namespace mk::oma {

// Now as the database stores times: milliseconds since the Unix epoch (wall clock).
int64_t now_ms();

}  // namespace mk::oma

namespace mk::oma::db {

// The start of a statement, for error messages: its first 60 characters.
std::string sql_head(const std::string& sql);

// A bound parameter: NULL, an integer, a double or text.
using Value = std::variant<std::monostate, int64_t, double, std::string>;

// One result row: each column as text, or nullopt for NULL (both engines return their
// values as text; Row's accessors convert).
class Row {
 public:
  explicit Row(std::vector<std::optional<std::string>> cols) : cols_(std::move(cols)) {}
  size_t size() const { return cols_.size(); }
  bool is_null(size_t i) const { return !cols_.at(i).has_value(); }
  std::string str(size_t i) const { return cols_.at(i).value_or(""); }
  std::optional<std::string> opt(size_t i) const { return cols_.at(i); }
  int64_t i64(size_t i) const;     // NULL reads as 0
  double dbl(size_t i) const;      // NULL reads as 0

 private:
  std::vector<std::optional<std::string>> cols_;
};

using Rows = std::vector<Row>;

// Thrown when a statement violates a UNIQUE or PRIMARY KEY constraint, so callers can
// turn "already exists" into a clear answer instead of a generic failure.
class ConstraintError : public mk::Error {
 public:
  using mk::Error::Error;
};

// Thrown when the database rolled a transaction back and running it again can succeed:
// a deadlock, a Galera certification failure (another node committed a conflicting
// change first), or the connection lost before COMMIT was sent. transaction() retries
// it; callers see it only once every attempt failed.
class RetryableError : public mk::Error {
 public:
  using mk::Error::Error;
};

// How many times transaction() runs a function whose transaction keeps being aborted.
inline constexpr int kTransactionAttempts = 8;

class Database {
 public:
  virtual ~Database() = default;

  // Runs one statement; returns its rows (empty for statements without results).
  // Throws mk::Error (ConstraintError for a unique violation) naming the statement.
  Rows query(const std::string& sql, const std::vector<Value>& params = {});
  // Runs one statement and returns the number of rows it changed.
  int64_t exec(const std::string& sql, const std::vector<Value>& params = {});

  // Runs `fn` inside BEGIN ... COMMIT; rolls back and rethrows if it throws. Calls to
  // query/exec from inside `fn` (same thread) join the transaction. When the database
  // aborts the transaction (RetryableError: deadlock, Galera certification failure),
  // rolls back and runs `fn` again from BEGIN, up to kTransactionAttempts times in all
  // (see the header comment); a nested call joins the outer transaction and leaves the
  // retry to it.
  void transaction(const std::function<void()>& fn);

  // Transactions (and single statements) run again after a RetryableError since this
  // connection was opened: for tests and diagnostics.
  int64_t retries() const { return retries_.load(); }

  // "sqlite" or "mariadb".
  virtual std::string engine() const = 0;
  // Where the database is, for messages (a path or host:port/name; never a password).
  virtual std::string describe() const = 0;
  // An SQL expression for the database's own time in ms since the Unix epoch (UTC), for
  // what several processes must judge alike (node leases): compared and computed in SQL,
  // so that the clocks of the OMA processes play no part.
  virtual std::string now_ms_sql() const = 0;

 protected:
  struct Result {
    Rows rows;
    int64_t changed = 0;
  };
  virtual Result run(const std::string& sql, const std::vector<Value>& params) = 0;
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() = 0;

 private:
  // Runs `once` again after a RetryableError (back-off, log), at most
  // kTransactionAttempts times in all; `what` names it in the log.
  template <typename F>
  auto with_retries(const char* what, F once) -> decltype(once());

  std::recursive_mutex mu_;
  int depth_ = 0;  // nesting of transaction() on the owning thread
  std::atomic<int64_t> retries_{0};
};

// Opens a database from a URL:
//   sqlite:/path/to/oma.db           (created if missing; WAL journal, foreign keys on)
//   mariadb://user@host:port/name?password_file=/path   (password read from a 0600 file)
//   mariadb://user@localhost/name?socket=/path/to/sock&password_file=/path
//   mariadb://user@host/name?password_file=/path&ssl_ca=/path/ca.pem   (TLS; the server's
//                                        certificate verified against the CA and the host)
// Throws mk::UsageError for a malformed URL, mk::Error when the connection fails.
std::unique_ptr<Database> open_database(const std::string& url);

}  // namespace mk::oma::db
