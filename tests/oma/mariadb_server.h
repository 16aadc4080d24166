// MariadbServer: a real, private MariaDB server for one test process: a fresh data
// directory (mariadb-install-db), mariadbd on 127.0.0.1 at a free port and on a Unix
// socket, and an unprivileged user "oma" whose random password is in a 0600 file.
// With `tls`, the server has a certificate of a CA made by the test (support/x509.h) and
// requires secure transport: TCP clients must use TLS (ca_file() verifies it).
// Stopped by PID when destroyed. Not thread-safe.
#pragma once

#include <memory>
#include <string>

#include "common/subprocess.h"
#include "oma/db/database.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

class MariadbServer {
 public:
  explicit MariadbServer(bool tls = false);
  ~MariadbServer();
  // Creates an empty database `name` (letters, digits, '_') and returns the OMA's URL
  // for it (user oma over TCP, password from the file).
  std::string create_database(const std::string& name);
  int port() const { return port_; }
  // The CA that signed the server's certificate (with tls).
  std::string ca_file() const { return dir_.file("pki/client/ca-cert.pem"); }

 private:
  // root over this server's own Unix socket, once it answers there; throws if it exits.
  std::unique_ptr<db::Database> connect_root(const std::string& log);

  mk::test::TempDir dir_{"mk-mariadb"};
  Subprocess server_;
  int port_ = 0;
  std::unique_ptr<db::Database> root_;
};

}  // namespace mk::oma::test
