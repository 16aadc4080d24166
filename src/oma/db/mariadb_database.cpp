// MariadbDatabase: the OMA's state in a MariaDB server (larger installations). Same
// schema and statements as SQLite (see database.h); prepared statements with bound
// parameters; CLIENT_FOUND_ROWS so that an UPDATE reports the rows it matched, as
// SQLite does. With ssl_ca= the connection is TLS, and the server's certificate must
// chain to that CA and name the host (MYSQL_OPT_SSL_VERIFY_SERVER_CERT): a server
// without TLS, or with a certificate of another CA or host, is refused, never used in
// clear. Thread-safety as Database.
//
// Galera (issue 18): the URL may name several servers, mariadb://USER@H1:P1,H2:P2/NAME:
// the nodes of one cluster, this OMA's own first. The connection goes to the first that
// answers and is ready (wsrep_ready ON, where Galera runs). When that server goes away
// (stopped, crashed, or cut off from the cluster's primary component), the next
// statement reconnects, trying the servers in order again:
//   * lost between statements (the statement could not even be prepared): reconnect and
//     run it;
//   * lost inside a transaction before COMMIT: the server never committed it, so the
//     transaction is RetryableError and Database::transaction() runs it again on the
//     new connection (every later statement of the broken transaction fails the same way
//     until then: none may run on a new connection outside it);
//   * lost during COMMIT, or during a write outside a transaction: whether it committed
//     is unknown, so it fails (mk::Error saying so) and the caller decides; reads are
//     run again.
// Deadlocks and certification failures (ER_LOCK_DEADLOCK; ER_LOCK_WAIT_TIMEOUT) are
// RetryableError.
//
// A transaction Galera aborted without telling. A conflicting commit from another node
// aborts a local transaction between two statements (a brute-force abort). Its error is
// meant to reach the next statement, but MariaDB 10.11 with Galera 4 can lose it (seen
// in the general log: after the abort the session ran on, the rows it had written were
// gone, and no statement failed); the statements after it then run outside the
// transaction. So a writing transaction proves at COMMIT that it is still the one it
// began: before its first write it inserts a random token into a temporary table of the
// session (transactional, never replicated), and before COMMIT it deletes that token: a
// token that is gone means the transaction was rolled back, and it is RetryableError.
// Transactions run with autocommit off, so that nothing a statement wrote after a silent
// abort is committed by itself: the ROLLBACK discards it. COMMIT is sent as a plain query
// right after the token's deletion, with no command in between that could swallow the
// abort's error. On Galera every session waits for causality before each statement that
// opens a transaction (wsrep_sync_wait = 7): a transaction on this node sees every commit
// of another node that came before it, as on one server.
#include <fcntl.h>
#include <fmt/format.h>
#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <vector>

#include "common/log.h"
#include "oma/db/database.h"

namespace mk::oma::db {
namespace {

struct MariadbHost {
  std::string host = "127.0.0.1";
  unsigned port = 3306;
};

struct MariadbUrl {
  std::string user, database, socket, password_file, ssl_ca;
  std::vector<MariadbHost> hosts;  // in the order they are tried; never empty
};

bool plain(const std::string& s) {
  return !s.empty() && s.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
                           std::string::npos;
}

MariadbUrl parse_url(const std::string& url) {
  MariadbUrl u;
  std::string rest = url.substr(std::string("mariadb://").size());
  std::string query;
  if (auto q = rest.find('?'); q != std::string::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  auto at = rest.find('@');
  auto slash = rest.find('/');
  if (at == std::string::npos || slash == std::string::npos || slash < at) {
    throw UsageError("--database: expected mariadb://USER@HOST[:PORT]/NAME[?password_file=F&socket=S&ssl_ca=F]");
  }
  u.user = rest.substr(0, at);
  std::stringstream hostlist(rest.substr(at + 1, slash - at - 1));
  u.database = rest.substr(slash + 1);
  std::string hostport;
  while (std::getline(hostlist, hostport, ',')) {
    MariadbHost h;
    if (auto c = hostport.find(':'); c != std::string::npos) {
      std::string p = hostport.substr(c + 1);
      if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos)
        throw UsageError("--database: the MariaDB port must be a number");
      h.port = static_cast<unsigned>(std::stoul(p));
      hostport = hostport.substr(0, c);
    }
    if (!hostport.empty()) h.host = hostport;
    if (!plain(h.host))
      throw UsageError("--database: a host may hold only letters, digits, '_', '.' and '-' (several: H1:P1,H2:P2)");
    u.hosts.push_back(h);
  }
  if (u.hosts.empty()) u.hosts.push_back({});
  if (u.hosts.size() > 16) throw UsageError("--database: at most 16 MariaDB servers");
  if (!plain(u.user) || !plain(u.database)) {
    throw UsageError("--database: user, host and database name may hold only letters, digits, '_', '.' and '-'");
  }
  std::stringstream qs(query);
  std::string kv;
  while (std::getline(qs, kv, '&')) {
    auto eq = kv.find('=');
    std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (k == "password_file") u.password_file = v;
    else if (k == "socket") u.socket = v;
    else if (k == "ssl_ca") u.ssl_ca = v;
    else throw UsageError(fmt::format("--database: unknown MariaDB option '{}' (password_file, socket, ssl_ca)",
                                      k.substr(0, 30)));
  }
  if (!u.ssl_ca.empty() && u.ssl_ca[0] != '/') throw UsageError("--database: ssl_ca must be an absolute path");
  if (!u.socket.empty() && u.hosts.size() > 1)
    throw UsageError("--database: socket= names one local server; list several servers as H1:P1,H2:P2 over TCP");
  return u;
}

// TLS with the server verified against `ca` (a PEM file); nothing for an empty `ca`.
void require_tls(MYSQL* db, const std::string& ca) {
  if (ca.empty()) return;
  if (::access(ca.c_str(), R_OK) != 0)
    throw UsageError(fmt::format("--database: ssl_ca {}: {}", ca, std::strerror(errno)));
  my_bool on = 1;
  mysql_options(db, MYSQL_OPT_SSL_CA, ca.c_str());
  mysql_options(db, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
  mysql_options(db, MYSQL_OPT_SSL_ENFORCE, &on);
}

std::string read_password(const std::string& path) {
  if (path.empty()) return "";
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw UsageError(fmt::format("MariaDB password file {}: {}", path, std::strerror(errno)));
  if (st.st_mode & 077) throw UsageError(fmt::format("MariaDB password file {} is readable by others: chmod 600 it", path));
  std::ifstream in(path);
  std::string pw;
  std::getline(in, pw);
  return pw;
}

// Errors after which this connection is of no more use: the server went away, closed
// it, or (Galera) is not part of the primary component. ER_UNKNOWN_COM_ERROR is what a
// Galera node answers while it is not ready ("WSREP has not yet prepared node for
// application use"): it ran nothing.
bool connection_gone(unsigned err) {
  switch (err) {
    case CR_SERVER_GONE_ERROR:
    case CR_SERVER_LOST:
    case CR_SERVER_LOST_EXTENDED:
    case CR_CONNECTION_ERROR:
    case CR_CONN_HOST_ERROR:
    case ER_SERVER_SHUTDOWN:
    case ER_CONNECTION_KILLED:
    case ER_UNKNOWN_COM_ERROR:
      return true;
    default:
      return false;
  }
}

bool read_only(const std::string& sql) { return sql.rfind("SELECT", 0) == 0; }

bool session_statement(const std::string& sql) { return sql == "SET autocommit = 0" || sql == "SET autocommit = 1"; }

// A statement that changes rows (the ones a transaction's token must come before).
bool writes(const std::string& sql) {
  for (const char* verb : {"INSERT", "UPDATE", "DELETE", "REPLACE"})
    if (sql.rfind(verb, 0) == 0) return true;
  return false;
}

class MariadbDatabase : public Database {
 public:
  explicit MariadbDatabase(MariadbUrl u) : url_(std::move(u)), password_(read_password(url_.password_file)) {
    std::string hosts;
    for (const auto& h : url_.hosts) hosts += (hosts.empty() ? "" : ",") + fmt::format("{}:{}", h.host, h.port);
    where_ = fmt::format("mariadb://{}@{}/{}", url_.user, hosts, url_.database);
    if (!url_.socket.empty()) where_ = fmt::format("mariadb://{}@{}/{}", url_.user, url_.socket, url_.database);
    if (!url_.ssl_ca.empty()) where_ += " (TLS)";
    connect();
  }
  ~MariadbDatabase() override {
    if (db_) mysql_close(db_);
  }

  std::string engine() const override { return "mariadb"; }
  std::string describe() const override { return where_; }
  // UTC, so that neither the session's time zone nor a daylight-saving change moves it.
  // (In a Galera cluster each node answers with its own clock: keep them in NTP sync.)
  std::string now_ms_sql() const override {
    return "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)";
  }

 protected:
  Result run(const std::string& sql, const std::vector<Value>& params) override;
  void begin() override {
    if (!db_) connect();
    // Autocommit off opens the transaction (at its first statement) and keeps it off for
    // whatever runs after a silent abort; no START TRANSACTION, which would not.
    run("SET autocommit = 0", {});
    in_transaction_ = true;
    token_ = 0;
  }
  void commit() override {
    if (token_ != 0) {
      hold_statement_ = true;  // its COM_STMT_CLOSE waits until after COMMIT
      int64_t gone = run("DELETE FROM mk_transaction_token WHERE token = ?", {token_}).changed;
      if (gone != 1)
        throw RetryableError(fmt::format("{}: the transaction was rolled back by the server without an error (a "
                                         "conflicting commit on another Galera node); nothing of it is committed",
                                         current_));
    }
    run("COMMIT", {});
    held_.reset();
    in_transaction_ = false;
    run("SET autocommit = 1", {});
  }
  void rollback() override {
    bool had = in_transaction_ && db_;
    in_transaction_ = broken_transaction_ = hold_statement_ = false;
    held_.reset();
    if (!had) return;  // a lost connection took its transaction with it (a new one has autocommit on)
    run("ROLLBACK", {});
    run("SET autocommit = 1", {});
  }

 private:
  // Connects to the first server in the URL's order that answers and is ready; throws
  // mk::Error naming every server and why when none is.
  void connect();
  MYSQL* open_one(const MariadbHost& h, std::string& why);
  void drop() {
    held_.reset();
    if (db_) mysql_close(db_);
    db_ = nullptr;
  }
  // Before the first write of a transaction: the token its COMMIT checks.
  void mark_transaction() {
    while (token_ == 0) token_ = static_cast<int64_t>(random_() >> 1);
    run("INSERT INTO mk_transaction_token (token) VALUES (?)", {token_});
  }
  Result run_once(const std::string& sql, const std::vector<Value>& params, bool& prepared);
  [[noreturn]] void fail(MYSQL_STMT* st, const std::string& sql, const char* what) {
    fail(mysql_stmt_errno(st), mysql_stmt_error(st), sql, what);
  }
  [[noreturn]] void fail(unsigned err, const char* error, const std::string& sql, const char* what) {
    std::string msg = fmt::format("{}: '{}' {}: {}", current_, sql_head(sql), what, error);
    if (err == ER_DUP_ENTRY) throw ConstraintError(msg);
    if (err == ER_LOCK_DEADLOCK || err == ER_LOCK_WAIT_TIMEOUT)
      throw RetryableError(msg + " (a conflicting change committed first, on this or another Galera node)");
    if (connection_gone(err)) throw Gone{msg, err};
    throw Error(msg);
  }
  struct Gone {
    std::string message;
    unsigned err;
  };

  MariadbUrl url_;
  std::string password_;
  std::string where_;    // every server, for messages
  std::string current_;  // the server of this connection, for messages
  MYSQL* db_ = nullptr;  // null after the connection was lost, until the next connect()
  bool in_transaction_ = false;
  bool broken_transaction_ = false;  // the connection was lost inside the open transaction
  int64_t token_ = 0;                // this transaction's token; 0 before its first write
  std::mt19937_64 random_{std::random_device{}()};
  bool hold_statement_ = false;  // keep the next statement open (in held_) instead of closing it
  std::unique_ptr<MYSQL_STMT, decltype(&mysql_stmt_close)> held_{nullptr, mysql_stmt_close};
};

MYSQL* MariadbDatabase::open_one(const MariadbHost& h, std::string& why) {
  MYSQL* db = mysql_init(nullptr);
  if (!db) throw Error("MariaDB: out of memory");
  unsigned timeout = 10;
  mysql_options(db, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
  mysql_options(db, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  try {
    require_tls(db, url_.ssl_ca);
  } catch (...) {
    mysql_close(db);
    throw;
  }
  if (!mysql_real_connect(db, h.host.c_str(), url_.user.c_str(), password_.empty() ? nullptr : password_.c_str(),
                          url_.database.c_str(), h.port, url_.socket.empty() ? nullptr : url_.socket.c_str(),
                          CLIENT_FOUND_ROWS)) {
    why = mysql_error(db);
    mysql_close(db);
    return nullptr;
  }
  // Set here, not through run(): a server that drops the connection at once is just the
  // next one's turn, never a reconnect from inside a reconnect.
  if (mysql_query(db, "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,ANSI_QUOTES'") != 0) {
    why = mysql_error(db);
    mysql_close(db);
    return nullptr;
  }
  // A Galera node that is not synced with the primary component refuses statements. (A
  // server built with wsrep but running without it reports wsrep_ready OFF too: only
  // wsrep_on says whether it is a Galera node.)
  if (mysql_query(db, "SELECT (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME = "
                      "'WSREP_ON'), (SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE "
                      "VARIABLE_NAME = 'WSREP_READY')") != 0) {
    why = mysql_error(db);
    mysql_close(db);
    return nullptr;
  }
  MYSQL_RES* res = mysql_store_result(db);
  MYSQL_ROW row = res ? mysql_fetch_row(res) : nullptr;
  bool galera = row && row[0] && std::string(row[0]) == "ON";
  bool ready = !galera || (row[1] && std::string(row[1]) == "ON");
  if (res) mysql_free_result(res);
  if (!ready) {
    why = "a Galera node that is not ready (wsrep_ready OFF: joining, or outside the primary component)";
    mysql_close(db);
    return nullptr;
  }
  // Galera applies other nodes' commits asynchronously: without a causality wait, a read
  // here could miss what another node committed a moment ago (a takeover, when this
  // node checks that it still owns a VM before touching its exports). With it, every
  // read sees every transaction the cluster committed before the read began. Galera
  // waits only before a statement that opens a transaction (or runs outside one), and
  // a writing transaction here opens with an INSERT (its token) or an UPDATE (a lock):
  // so the wait covers reads, updates, deletes and inserts (1 + 2 + 4), not reads alone,
  // which let a placement on one node miss a VM another node had just added.
  if (galera && mysql_query(db, "SET SESSION wsrep_sync_wait = 7") != 0) {
    why = std::string("SET wsrep_sync_wait: ") + mysql_error(db);
    mysql_close(db);
    return nullptr;
  }
  // The session's transaction tokens (see the header comment): InnoDB, so that a
  // rollback removes a token; temporary, so that Galera never replicates it.
  if (mysql_query(db, "CREATE TEMPORARY TABLE IF NOT EXISTS mk_transaction_token (token BIGINT PRIMARY KEY) "
                      "ENGINE=InnoDB") != 0) {
    why = std::string("CREATE TEMPORARY TABLE: ") + mysql_error(db);
    mysql_close(db);
    return nullptr;
  }
  return db;
}

void MariadbDatabase::connect() {
  drop();
  std::string errors;
  for (const auto& h : url_.hosts) {
    std::string why;
    MYSQL* db = open_one(h, why);
    std::string name = url_.socket.empty() ? fmt::format("{}:{}", h.host, h.port) : url_.socket;
    if (!db) {
      errors += fmt::format("{}{}: {}", errors.empty() ? "" : "; ", name, why);
      continue;
    }
    db_ = db;
    current_ = fmt::format("mariadb://{}@{}/{}", url_.user, name, url_.database);
    if (!errors.empty())
      log::warn("database {}: connected to {} ({})", where_, name, errors);
    broken_transaction_ = false;
    return;
  }
  throw Error(fmt::format("cannot connect to {}: {} (check the server, the user's grants and the password file)",
                          where_, errors));
}

Database::Result MariadbDatabase::run(const std::string& sql, const std::vector<Value>& params) {
  if (broken_transaction_ || (in_transaction_ && !db_)) {
    broken_transaction_ = true;
    throw RetryableError(fmt::format("{}: the connection was lost inside this transaction, which the server rolled "
                                     "back",
                                     where_));
  }
  if (in_transaction_ && token_ == 0 && writes(sql)) mark_transaction();
  for (int attempt = 0;; ++attempt) {
    if (!db_) connect();
    bool prepared = false;
    try {
      return run_once(sql, params, prepared);
    } catch (const Gone& g) {
      drop();
      log::warn("database {}: lost the connection ({}); reconnecting", where_, g.message);
      if (in_transaction_) {
        if (sql == "COMMIT") {
          in_transaction_ = false;
          throw Error(fmt::format("{}: the connection was lost during COMMIT, so whether the transaction was "
                                  "committed is unknown ({})",
                                  where_, g.message));
        }
        broken_transaction_ = true;
        throw RetryableError(fmt::format("{} (the transaction was rolled back with the connection)", g.message));
      }
      // Outside a transaction: a statement never executed, a read, or one a not-ready
      // Galera node refused runs again on the next server; a write may have committed.
      bool ran_nothing = !prepared || g.err == ER_UNKNOWN_COM_ERROR;
      if (attempt >= 1 || !(ran_nothing || read_only(sql)))
        throw Error(fmt::format("{} (whether the statement took effect is unknown)", g.message));
    }
  }
}
Database::Result MariadbDatabase::run_once(const std::string& sql, const std::vector<Value>& params, bool& prepared) {
  if (session_statement(sql) || sql == "COMMIT" || sql == "ROLLBACK") {
    // A plain query: one command with its answer. A session setting is lost with its
    // connection, so it counts as never run; COMMIT and ROLLBACK may have run.
    prepared = !session_statement(sql);
    if (mysql_real_query(db_, sql.c_str(), sql.size()) != 0) fail(mysql_errno(db_), mysql_error(db_), sql, "failed");
    return {};
  }
  std::unique_ptr<MYSQL_STMT, decltype(&mysql_stmt_close)> st(mysql_stmt_init(db_), mysql_stmt_close);
  if (!st) throw Error(where_ + ": out of memory");
  if (mysql_stmt_prepare(st.get(), sql.c_str(), sql.size()) != 0) fail(st.get(), sql, "cannot be prepared");
  prepared = true;
  std::vector<MYSQL_BIND> binds(params.size());
  std::vector<int64_t> ints(params.size());
  std::vector<double> dbls(params.size());
  std::vector<unsigned long> lens(params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    MYSQL_BIND& b = binds[i];
    std::memset(&b, 0, sizeof b);
    const Value& v = params[i];
    if (std::holds_alternative<std::monostate>(v)) {
      b.buffer_type = MYSQL_TYPE_NULL;
    } else if (auto* n = std::get_if<int64_t>(&v)) {
      ints[i] = *n;
      b.buffer_type = MYSQL_TYPE_LONGLONG;
      b.buffer = &ints[i];
    } else if (auto* d = std::get_if<double>(&v)) {
      dbls[i] = *d;
      b.buffer_type = MYSQL_TYPE_DOUBLE;
      b.buffer = &dbls[i];
    } else {
      const auto& s = std::get<std::string>(v);
      lens[i] = s.size();
      b.buffer_type = MYSQL_TYPE_STRING;
      b.buffer = const_cast<char*>(s.data());
      b.buffer_length = s.size();
      b.length = &lens[i];
    }
  }
  if (!binds.empty() && mysql_stmt_bind_param(st.get(), binds.data()) != 0) fail(st.get(), sql, "cannot bind");
  if (mysql_stmt_execute(st.get()) != 0) fail(st.get(), sql, "failed");
  Result r;
  std::unique_ptr<MYSQL_RES, decltype(&mysql_free_result)> meta(mysql_stmt_result_metadata(st.get()),
                                                                 mysql_free_result);
  if (!meta) {
    r.changed = static_cast<int64_t>(mysql_stmt_affected_rows(st.get()));
    if (hold_statement_) held_ = std::move(st);
    hold_statement_ = false;
    return r;
  }
  my_bool update_max = 1;
  mysql_stmt_attr_set(st.get(), STMT_ATTR_UPDATE_MAX_LENGTH, &update_max);
  if (mysql_stmt_store_result(st.get()) != 0) fail(st.get(), sql, "cannot read results");
  unsigned n = mysql_num_fields(meta.get());
  MYSQL_FIELD* fields = mysql_fetch_fields(meta.get());
  std::vector<MYSQL_BIND> out(n);
  std::vector<std::string> bufs(n);
  std::vector<unsigned long> out_lens(n);
  std::vector<my_bool> nulls(n);
  for (unsigned c = 0; c < n; ++c) {
    bufs[c].resize(std::max<unsigned long>(fields[c].max_length, 64) + 1);
    std::memset(&out[c], 0, sizeof out[c]);
    out[c].buffer_type = MYSQL_TYPE_STRING;
    out[c].buffer = bufs[c].data();
    out[c].buffer_length = bufs[c].size();
    out[c].length = &out_lens[c];
    out[c].is_null = &nulls[c];
  }
  if (mysql_stmt_bind_result(st.get(), out.data()) != 0) fail(st.get(), sql, "cannot bind results");
  for (;;) {
    int rc = mysql_stmt_fetch(st.get());
    if (rc == MYSQL_NO_DATA) break;
    if (rc == 1) fail(st.get(), sql, "cannot fetch");
    std::vector<std::optional<std::string>> cols;
    for (unsigned c = 0; c < n; ++c) {
      if (nulls[c]) cols.emplace_back(std::nullopt);
      else cols.emplace_back(std::string(bufs[c].data(), std::min<unsigned long>(out_lens[c], bufs[c].size())));
    }
    r.rows.emplace_back(std::move(cols));
  }
  return r;
}

}  // namespace

std::unique_ptr<Database> open_mariadb(const std::string& url) {
  return std::make_unique<MariadbDatabase>(parse_url(url));
}

}  // namespace mk::oma::db
