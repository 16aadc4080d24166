// X.509 NBD with --keep-export-server, on the real oma binary: the kept nbdkit verifies
// clients (--tls-verify-peer on the directory the OMA assembles), the next start adopts
// it while nothing changed, and restarts it when what it read changed while the OMA was
// down (here: the operator renewed the server certificate), since nbdkit reads its
// certificates only at start.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "oma/exports/nbdkit_server.h"
#include "oma_process.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "support/x509.h"

namespace mk::oma::test {
namespace {

namespace fs = std::filesystem;

// Ends the kept nbdkit (by its recorded PID) whatever the test's outcome.
struct KeptServerGuard {
  std::string record;
  ~KeptServerGuard() {
    try {
      stop_kept_export_server(record);
    } catch (const std::exception&) {
    }
  }
};

TEST(NbdX509Kept, AKeptServerIsAdoptedWhileItsCertificatesStayAndRestartedWhenTheyChanged) {
  mk::test::TempDir dir("mk-x509-kept");
  fs::create_directories(dir.file("pki"));
  std::string operator_dir = mk::test::make_x509_pki(dir.file("pki")).server;
  std::string data = dir.file("oma");
  KeptServerGuard guard{kept_server_record_path(data)};
  const std::vector<std::string> args = {"--tls-certificates", operator_dir, "--keep-export-server"};

  pid_t first = -1;
  {
    OmaProcess oma(data, "http://127.0.0.1:1", dir.file("oma1.log"), args);
    auto record = read_kept_server_record(guard.record);
    ASSERT_TRUE(record);
    first = record->pid;
    EXPECT_NE(std::find(record->argv.begin(), record->argv.end(), "--tls-verify-peer"), record->argv.end());
    EXPECT_NE(std::find(record->argv.begin(), record->argv.end(), "--tls-certificates=" + data + "/nbd-x509/nbdkit"),
              record->argv.end());
  }
  {
    OmaProcess oma(data, "http://127.0.0.1:1", dir.file("oma2.log"), args);
    EXPECT_EQ(read_kept_server_record(guard.record)->pid, first) << "nothing changed: the kept server is adopted";
  }
  // The operator renews the NBD server's certificate (another CA, too) while the OMA is down.
  fs::create_directories(dir.file("pki2"));
  std::string renewed = mk::test::make_x509_pki(dir.file("pki2")).server;
  for (const char* f : {"ca-cert.pem", "server-cert.pem", "server-key.pem"})
    fs::copy_file(renewed + "/" + f, operator_dir + "/" + f, fs::copy_options::overwrite_existing);
  {
    OmaProcess oma(data, "http://127.0.0.1:1", dir.file("oma3.log"), args);
    auto record = read_kept_server_record(guard.record);
    ASSERT_TRUE(record);
    EXPECT_NE(record->pid, first) << mk::test::read_file(dir.file("oma3.log"));
    EXPECT_EQ(mk::test::read_file(data + "/nbd-x509/nbdkit/server-cert.pem"),
              mk::test::read_file(renewed + "/server-cert.pem"));
  }
}

}  // namespace
}  // namespace mk::oma::test
