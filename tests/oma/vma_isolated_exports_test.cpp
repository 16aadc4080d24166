// VmaIsolatedExports (src/oma/exports/vma_isolated_exports.h) with keep_running, against
// the real migratekit-nbd-router and real nbdkit processes, driven by real libnbd: an
// OMA restart (stop(), then a new backend on the same data) adopts the router, the OMA's
// nbdkit and each VMA's nbdkit by their records (same PIDs), a connection opened before
// the restart keeps working through it, revocation ends only that VMA's server, and
// stop_kept_export_server() ends every kept process. In both NBD TLS modes: PSK (each
// nbdkit does TLS with its VMA's key) and X.509 (the router ends TLS and routes by the
// client certificate's CN; the nbdkits behind it speak plain NBD).
#include <gtest/gtest.h>
#include <libnbd.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <thread>

#include "common/endpoint.h"
#include "oma/exports/vma_isolated_exports.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "support/x509.h"

namespace mk::oma {
namespace {

constexpr const char* kVmA = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00a1";
constexpr const char* kVmB = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00b1";
std::string export_of(const std::string& vm) { return "migration-vm-" + vm + "-disk0"; }

bool alive(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string pid_s, comm, state;
  in >> pid_s >> comm >> state;
  return in && state != "Z";
}

using NbdConnection = std::unique_ptr<nbd_handle, decltype(&nbd_close)>;

// `keys`: a PSK file, or an X.509 client certificates directory.
NbdConnection open_export(int port, const std::string& keys, const std::string& name) {
  NbdConnection h(nbd_create(), nbd_close);
  nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE);
  if (std::filesystem::is_directory(keys)) {
    nbd_set_tls_certificates(h.get(), keys.c_str());
  } else {
    nbd_set_tls_psk_file(h.get(), keys.c_str());
    nbd_set_tls_username(h.get(), first_psk_identity(keys).c_str());
  }
  nbd_set_export_name(h.get(), name.c_str());
  // "localhost": the name in the X.509 test server certificate.
  if (nbd_connect_tcp(h.get(), "localhost", std::to_string(port).c_str()) == -1) return NbdConnection(nullptr, nbd_close);
  return h;
}

struct KeptIsolation : ::testing::TestWithParam<bool> {  // true: X.509
  bool x509() const { return GetParam(); }
  mk::test::TempDir dir{"mk-kept-isolation"};
  std::string data = dir.file("data");
  std::string record = data + "/export-server.json";
  std::string oma_keys, keys_a, keys_b;  // PSK files, or (X.509) client certificate directories
  std::string certs;                     // X.509: the router's certificates directory
  std::map<std::string, std::string> owner = {{kVmA, "vma-a-id"}, {kVmB, "vma-b-id"}};

  void SetUp() override {
    std::filesystem::create_directories(data);
    if (x509()) {
      // The router's directory as NbdClientCa lays it out (here one CA signs the server's
      // certificate and the clients'), with the OMA's own client certificate (CN "oma");
      // the VMAs' certificates are named by their ids.
      std::string pki = dir.file("pki");
      std::filesystem::create_directories(pki);
      std::string server = mk::test::make_x509_pki(pki).server;
      certs = mk::test::issue_x509_client(pki, data + "/x509", "oma");
      for (const char* f : {"server-cert.pem", "server-key.pem"})
        std::filesystem::copy_file(server + "/" + f, certs + "/" + f);
      std::filesystem::copy_file(pki + "/ca/ca-cert.pem", certs + "/client-ca.pem");
      mk::test::make_x509_crl(pki, certs + "/ca-crl.pem");
      keys_a = mk::test::issue_x509_client(pki, dir.file("a"), "vma-a-id");
      keys_b = mk::test::issue_x509_client(pki, dir.file("b"), "vma-b-id");
    } else {
      oma_keys = mk::test::make_psk_file(data + "/nbd-psk.keys", "oma");
      keys_a = mk::test::make_psk_file(dir.file("a.keys"), "vma-aaaaaaaaaaaaaaaa");
      keys_b = mk::test::make_psk_file(dir.file("b.keys"), "vma-bbbbbbbbbbbbbbbb");
    }
    for (const char* vm : {kVmA, kVmB}) mk::test::create_sparse_file(dir.file(std::string(vm) + ".img"), 1 << 20);
  }
  void TearDown() override {
    // A failure here has been a kept server that died: its log says why.
    if (HasFailure())
      for (const auto& e : std::filesystem::recursive_directory_iterator(data))
        if (e.path().extension() == ".log")
          std::cerr << "--- " << e.path().string() << "\n" << mk::test::read_file(e.path().string()) << "\n";
    if (std::filesystem::exists(record)) stop_kept_export_server(record);
  }
  std::unique_ptr<VmaIsolatedExports> backend(int port = 0) {
    ExportServerConfig c;
    c.exports_dir = data + "/exports";
    c.listen_address = "127.0.0.1";
    c.port = port;
    if (x509()) c.tls = {"", certs, true};
    else c.tls.psk_file = oma_keys;
    c.log_path = data + "/export-server.log";
    c.keep_running = true;
    c.record_path = record;
    return std::make_unique<VmaIsolatedExports>(c, data + "/nbd-isolation", [this](const std::string& vm) {
      auto it = owner.find(vm);
      return it == owner.end() ? std::nullopt : std::optional<std::string>(it->second);
    });
  }
  std::vector<VmaNbdAccess> access(bool with_a = true) {
    std::vector<VmaNbdAccess> v;
    if (x509()) {  // the identity is the VMA's id, its certificate's CN
      if (with_a) v.push_back({"vma-a-id", ""});
      v.push_back({"vma-b-id", ""});
      return v;
    }
    if (with_a) v.push_back({"vma-a-id", mk::test::read_file(keys_a).substr(0, mk::test::read_file(keys_a).find('\n'))});
    v.push_back({"vma-b-id", mk::test::read_file(keys_b).substr(0, mk::test::read_file(keys_b).find('\n'))});
    return v;
  }
};

TEST_P(KeptIsolation, AnOmaRestartAdoptsEveryServerAndOpenConnectionsGoOn) {
  auto first = backend();
  first->start();
  first->set_vma_access(access());
  for (const char* vm : {kVmA, kVmB}) first->publish(export_of(vm), dir.file(std::string(vm) + ".img"));
  int port = first->port();
  pid_t router = first->server_pid(), a = first->vma_server_pid("vma-a-id"), b = first->vma_server_pid("vma-b-id");
  ASSERT_GT(a, 0);
  NbdConnection before = open_export(port, keys_a, export_of(kVmA));
  ASSERT_TRUE(before) << nbd_get_error();
  EXPECT_FALSE(open_export(port, keys_a, export_of(kVmB)));

  first->stop();  // the OMA stops: its kept servers stay
  first.reset();
  char buf[512] = {'x'};
  ASSERT_EQ(nbd_pwrite(before.get(), buf, sizeof buf, 0, 0), 0) << nbd_get_error();  // while no OMA runs

  auto second = backend();
  second->start();
  second->set_vma_access(access());
  EXPECT_TRUE(second->adopted());
  EXPECT_EQ(second->server_pid(), router);
  EXPECT_EQ(second->port(), port);
  EXPECT_EQ(second->vma_server_pid("vma-a-id"), a);
  EXPECT_EQ(second->vma_server_pid("vma-b-id"), b);
  ASSERT_EQ(nbd_flush(before.get(), 0), 0) << nbd_get_error();  // the same session, through the restart
  EXPECT_TRUE(open_export(port, keys_b, export_of(kVmB)));
  EXPECT_FALSE(open_export(port, keys_b, export_of(kVmA)));

  // Revoking a: its server ends (and its session with it); b's server is untouched.
  second->set_vma_access(access(/*with_a=*/false));
  EXPECT_FALSE(alive(a));
  EXPECT_EQ(nbd_pread(before.get(), buf, sizeof buf, 0, 0), -1);
  EXPECT_FALSE(open_export(port, keys_a, export_of(kVmA)));
  EXPECT_EQ(second->vma_server_pid("vma-b-id"), b);
  EXPECT_TRUE(open_export(port, keys_b, export_of(kVmB)));
  EXPECT_FALSE(std::filesystem::exists(data + "/nbd-isolation/vma/" + (x509() ? "vma-a-id" : "vma-aaaaaaaaaaaaaaaa")));
  second->stop();

  // --stop-export-server ends the router and every server behind it.
  pid_t main_pid = -1;
  {
    auto r = read_kept_server_record(kept_servers_dir(record) + "/oma.json");
    ASSERT_TRUE(r);
    main_pid = r->pid;
  }
  std::string what = stop_kept_export_server(record);
  for (pid_t p : {router, b, main_pid}) {
    for (int i = 0; i < 500 && alive(p); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    EXPECT_FALSE(alive(p)) << p << ": " << what;
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, KeptIsolation, testing::Values(false, true),
                         [](const testing::TestParamInfo<bool>& p) { return p.param ? "X509" : "Psk"; });

}  // namespace
}  // namespace mk::oma
