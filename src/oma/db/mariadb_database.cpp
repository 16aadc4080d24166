// MariadbDatabase: the OMA's state in a MariaDB server (larger installations). Same
// schema and statements as SQLite (see database.h); prepared statements with bound
// parameters; CLIENT_FOUND_ROWS so that an UPDATE reports the rows it matched, as
// SQLite does. With ssl_ca= the connection is TLS, and the server's certificate must
// chain to that CA and name the host (MYSQL_OPT_SSL_VERIFY_SERVER_CERT): a server
// without TLS, or with a certificate of another CA or host, is refused, never used in
// clear. Thread-safety as Database.
#include <fcntl.h>
#include <fmt/format.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "oma/db/database.h"

namespace mk::oma::db {
namespace {

std::string head(const std::string& sql) { return sql.size() > 60 ? sql.substr(0, 60) + "..." : sql; }

struct MariadbUrl {
  std::string user, host = "127.0.0.1", database, socket, password_file, ssl_ca;
  unsigned port = 3306;
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
  std::string hostport = rest.substr(at + 1, slash - at - 1);
  u.database = rest.substr(slash + 1);
  if (auto c = hostport.find(':'); c != std::string::npos) {
    std::string p = hostport.substr(c + 1);
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string::npos)
      throw UsageError("--database: the MariaDB port must be a number");
    u.port = static_cast<unsigned>(std::stoul(p));
    hostport = hostport.substr(0, c);
  }
  if (!hostport.empty()) u.host = hostport;
  if (!plain(u.user) || !plain(u.host) || !plain(u.database)) {
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

class MariadbDatabase : public Database {
 public:
  explicit MariadbDatabase(const MariadbUrl& u) : where_(fmt::format("mariadb://{}@{}:{}/{}", u.user, u.host, u.port, u.database)) {
    if (!u.socket.empty()) where_ = fmt::format("mariadb://{}@{}/{}", u.user, u.socket, u.database);
    db_ = mysql_init(nullptr);
    if (!db_) throw Error("MariaDB: out of memory");
    unsigned timeout = 10;
    mysql_options(db_, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    mysql_options(db_, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (!u.ssl_ca.empty()) where_ += " (TLS)";
    try {
      require_tls(db_, u.ssl_ca);
    } catch (...) {
      mysql_close(db_);
      throw;
    }
    std::string pw = read_password(u.password_file);
    if (!mysql_real_connect(db_, u.host.c_str(), u.user.c_str(), pw.empty() ? nullptr : pw.c_str(),
                            u.database.c_str(), u.port, u.socket.empty() ? nullptr : u.socket.c_str(),
                            CLIENT_FOUND_ROWS)) {
      std::string msg = mysql_error(db_);
      mysql_close(db_);
      throw Error(fmt::format("cannot connect to {}: {} (check the server, the user's grants and the password file)",
                              where_, msg));
    }
    run("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_DATE,ANSI_QUOTES'", {});
  }
  ~MariadbDatabase() override { mysql_close(db_); }

  std::string engine() const override { return "mariadb"; }
  std::string describe() const override { return where_; }
  // UTC, so that neither the session's time zone nor a daylight-saving change moves it.
  // (In a Galera cluster each node answers with its own clock: keep them in NTP sync.)
  std::string now_ms_sql() const override {
    return "CAST(TIMESTAMPDIFF(MICROSECOND, '1970-01-01 00:00:00', UTC_TIMESTAMP(6)) DIV 1000 AS SIGNED)";
  }

 protected:
  Result run(const std::string& sql, const std::vector<Value>& params) override;
  void begin() override { run("START TRANSACTION", {}); }
  void commit() override { run("COMMIT", {}); }
  void rollback() override { run("ROLLBACK", {}); }

 private:
  [[noreturn]] void fail(MYSQL_STMT* st, const std::string& sql, const char* what) {
    std::string msg = fmt::format("{}: '{}' {}: {}", where_, head(sql), what, mysql_stmt_error(st));
    if (mysql_stmt_errno(st) == ER_DUP_ENTRY) throw ConstraintError(msg);
    throw Error(msg);
  }

  std::string where_;
  MYSQL* db_ = nullptr;
};

Database::Result MariadbDatabase::run(const std::string& sql, const std::vector<Value>& params) {
  std::unique_ptr<MYSQL_STMT, decltype(&mysql_stmt_close)> st(mysql_stmt_init(db_), mysql_stmt_close);
  if (!st) throw Error(where_ + ": out of memory");
  if (mysql_stmt_prepare(st.get(), sql.c_str(), sql.size()) != 0) fail(st.get(), sql, "cannot be prepared");
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
