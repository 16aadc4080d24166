// MariadbServer: a real, private MariaDB server for one test process: a fresh data
// directory (mariadb-install-db), mariadbd on 127.0.0.1 at a free port and on a Unix
// socket, and an unprivileged user "oma" whose random password is in a 0600 file.
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
  MariadbServer();
  ~MariadbServer();
  // Creates an empty database `name` (letters, digits, '_') and returns the OMA's URL
  // for it (user oma over TCP, password from the file).
  std::string create_database(const std::string& name);
  int port() const { return port_; }

 private:
  mk::test::TempDir dir_{"mk-mariadb"};
  Subprocess server_;
  int port_ = 0;
  std::unique_ptr<db::Database> root_;
};

}  // namespace mk::oma::test
