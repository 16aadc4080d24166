// Shared setup for the OMA tests: a private directory with a SQLite database, a PSK
// file, local volumes and an nbdkit export server on a free loopback port.
//
// Owns everything it starts; the server is stopped by PID in the destructor. Not
// thread-safe (the objects it exposes are).
#pragma once

#include <memory>

#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "oma/db/repositories.h"
#include "oma/exports/export_manager.h"
#include "oma/exports/nbdkit_server.h"
#include "oma/volumes/volume_manager.h"
#include "support/files.h"
#include "support/net.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

inline std::unique_ptr<NbdkitExportServer> start_nbdkit_exports(const std::string& exports_dir,
                                                                const std::string& psk, const std::string& log) {
  // free_tcp_port() can race with another process: retry with a fresh port.
  for (int attempt = 0;; ++attempt) {
    ExportServerConfig c;
    c.exports_dir = exports_dir;
    c.listen_address = "127.0.0.1";
    c.port = mk::test::free_tcp_port();
    c.tls.psk_file = psk;
    c.log_path = log;
    auto s = std::make_unique<NbdkitExportServer>(c);
    try {
      s->start();
      return s;
    } catch (const std::exception&) {
      if (attempt >= 3) throw;
    }
  }
}

struct OmaFixture {
  mk::test::TempDir dir{"mk-oma"};
  db::SqliteDatabase database{dir.file("oma.db")};
  Repositories repos{database};
  std::string psk = mk::test::make_psk_file(dir.file("psk.keys"), "oma");
  LocalVolumeBackend volume_backend{dir.file("volumes")};
  VolumeManager volumes{repos.storage, volume_backend};
  std::unique_ptr<NbdkitExportServer> server;
  std::unique_ptr<ExportManager> exports;

  OmaFixture() {
    db::migrate(database);
    server = start_nbdkit_exports(dir.file("exports"), psk, dir.file("nbdkit.log"));
    exports = std::make_unique<ExportManager>(repos.storage, *server);
  }
};

}  // namespace mk::oma::test
