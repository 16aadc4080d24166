// X.509 NBD with --keep-export-server, on the real oma binary: the kept NBD router ends
// TLS with the directory the OMA assembles (its --tls-certificates argument) and the
// OMA's own nbdkit behind it speaks plain NBD on its Unix socket; the next start adopts
// both. The router reads its certificates at every connection, so it is adopted even
// when the operator renewed the server certificate while the OMA was down, and serves
// the renewed one at once: no restart drops anyone's copy.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "common/subprocess.h"
#include "oma/exports/nbdkit_server.h"
#include "oma_process.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "support/x509.h"

namespace mk::oma::test {
namespace {

namespace fs = std::filesystem;

// Ends the kept servers (by their recorded PIDs) whatever the test's outcome.
struct KeptServerGuard {
  std::string record;
  ~KeptServerGuard() {
    try {
      stop_kept_export_server(record);
    } catch (const std::exception&) {
    }
  }
};

bool contains(const std::vector<std::string>& argv, const std::string& s) {
  return std::find(argv.begin(), argv.end(), s) != argv.end();
}

// Whether libnbd gets through the TLS handshake on localhost:port with the certificates
// directory `dir` (it lists the exports); `err` gets nbdinfo's.
bool handshake(const std::string& dir, int port, std::string& err) {
  mk::test::TempDir log("mk-nbdinfo");
  std::string out;
  int rc = mk::run_capture({"nbdinfo", "--list", fmt::format("nbds://localhost:{}/?tls-certificates={}", port, dir)},
                           out, log.file("err"));
  err = mk::test::read_file(log.file("err"));
  return rc == 0;
}

TEST(NbdX509Kept, TheKeptRouterIsAdoptedAndServesARenewedServerCertificateWithoutARestart) {
  mk::test::TempDir dir("mk-x509-kept");
  fs::create_directories(dir.file("pki"));
  std::string operator_dir = mk::test::make_x509_pki(dir.file("pki")).server;
  std::string data = dir.file("oma");
  KeptServerGuard guard{kept_server_record_path(data)};
  const std::vector<std::string> args = {"--tls-certificates", operator_dir, "--keep-export-server"};
  const std::string own = data + "/nbd-x509/nbdkit";  // the OMA's own client directory

  pid_t router = -1, main = -1;
  int port = 0;
  std::string err;
  {
    OmaProcess oma(data, "http://127.0.0.1:1", dir.file("oma1.log"), args);
    auto record = read_kept_server_record(guard.record);
    ASSERT_TRUE(record);
    router = record->pid;
    port = record->port;
    EXPECT_TRUE(contains(record->argv, "--tls-certificates")) << "the router ends TLS";
    EXPECT_TRUE(contains(record->argv, own));
    auto behind = read_kept_server_record(kept_servers_dir(guard.record) + "/oma.json");
    ASSERT_TRUE(behind);
    main = behind->pid;
    for (const auto& a : behind->argv) EXPECT_EQ(a.rfind("--tls", 0), std::string::npos) << a;
    EXPECT_TRUE(handshake(own, port, err)) << err;
  }
  {
    OmaProcess oma(data, "http://127.0.0.1:1", dir.file("oma2.log"), args);
    EXPECT_EQ(read_kept_server_record(guard.record)->pid, router) << "nothing changed: the kept router is adopted";
    EXPECT_EQ(read_kept_server_record(kept_servers_dir(guard.record) + "/oma.json")->pid, main);
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
    EXPECT_EQ(record->pid, router) << mk::test::read_file(dir.file("oma3.log"));
    EXPECT_EQ(mk::test::read_file(own + "/server-cert.pem"), mk::test::read_file(renewed + "/server-cert.pem"));
    // The OMA's client now trusts only the renewed CA for the server: the handshake works
    // only if the adopted router serves the renewed certificate.
    EXPECT_TRUE(handshake(own, port, err)) << err;
  }
}

}  // namespace
}  // namespace mk::oma::test
