#include "mariadb_server.h"

#include <fmt/format.h>
#include <openssl/rand.h>

#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/files.h"
#include "support/net.h"
#include "support/x509.h"

namespace mk::oma::test {

MariadbServer::MariadbServer(bool tls) {
  std::string install_log = dir_.file("install.log");
  std::string out;
  // Its own temporary directory: a server starting clears the temporary tables it finds
  // there, also those of another test's server or installation running at that moment.
  std::filesystem::create_directories(dir_.file("tmp"));
  const std::string tmpdir = "--tmpdir=" + dir_.file("tmp");
  int rc = run_capture({"mariadb-install-db", "--no-defaults", "--datadir=" + dir_.file("data"), "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db", tmpdir},
                       out, install_log);
  if (rc != 0) throw Error("mariadb-install-db failed:\n" + mk::test::log_tail(install_log));
  std::string log = dir_.file("server.log");
  std::vector<std::string> tls_args;
  if (tls) {
    std::filesystem::create_directories(dir_.file("pki"));
    auto pki = mk::test::make_x509_pki(dir_.file("pki"));
    tls_args = {"--ssl-ca=" + pki.server + "/ca-cert.pem", "--ssl-cert=" + pki.server + "/server-cert.pem",
                "--ssl-key=" + pki.server + "/server-key.pem", "--require-secure-transport=ON"};
  }
  for (int attempt = 0;; ++attempt) {
    port_ = mk::test::free_tcp_port();
    SpawnOptions o;
    o.stdout_path = log;
    o.stderr_path = log;
    std::vector<std::string> argv{"mariadbd", "--no-defaults", "--datadir=" + dir_.file("data"),
                                 "--socket=" + dir_.file("s.sock"), "--port=" + std::to_string(port_),
                                 "--bind-address=127.0.0.1", "--user=root", "--skip-log-bin",
                                 "--innodb-buffer-pool-size=16M", "--skip-name-resolve",
                                 "--pid-file=" + dir_.file("mariadbd.pid"), "--log-error=" + log, tmpdir};
    argv.insert(argv.end(), tls_args.begin(), tls_args.end());
    server_ = Subprocess::spawn(argv, o);
    try {
      mk::test::wait_for_tcp_port(port_, {"mariadbd", log, &server_}, std::chrono::seconds(60));
      // The port may answer for another test's server that took it first (this one then
      // exits): only this server's own socket proves it is up.
      root_ = connect_root(log);
      break;
    } catch (const Error&) {
      server_.stop();
      if (attempt >= 2) throw;
    }
  }
  unsigned char pw[16];
  RAND_bytes(pw, sizeof pw);
  std::string password;
  for (unsigned char c : pw) password += fmt::format("{:02x}", c);
  write_private_file(dir_.file("oma.password"), password + "\n");
  // The password is random hex made here, so it can be spelled inside the statement.
  root_->exec(fmt::format("CREATE USER 'oma'@'127.0.0.1' IDENTIFIED BY '{}'", password));
}

std::unique_ptr<db::Database> MariadbServer::connect_root(const std::string& log) {
  std::string url = fmt::format("mariadb://root@localhost/mysql?socket={}", dir_.file("s.sock"));
  for (int i = 0;; ++i) {
    if (!server_.running()) throw Error("mariadbd exited (its port taken?):\n" + mk::test::log_tail(log));
    try {
      return db::open_database(url);
    } catch (const Error&) {
      if (i >= 600) throw;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

MariadbServer::~MariadbServer() {
  root_.reset();
  server_.stop(std::chrono::milliseconds(10000));
}

std::string MariadbServer::create_database(const std::string& name) {
  if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
    throw UsageError("database name: lowercase letters, digits and '_' only");
  root_->exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4");
  root_->exec("GRANT ALL PRIVILEGES ON " + name + ".* TO 'oma'@'127.0.0.1'");
  return fmt::format("mariadb://oma@127.0.0.1:{}/{}?password_file={}", port_, name, dir_.file("oma.password"));
}

}  // namespace mk::oma::test
