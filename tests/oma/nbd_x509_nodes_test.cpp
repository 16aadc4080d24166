// Two real `oma` nodes over one real MariaDB server with X.509 NBD (issue 18): they
// start at once and both take the one client CA the database stored; a VMA enrolled and
// approved through node a gets through node b's NBD router in a real TLS handshake
// (nbdinfo with its client certificate); revoked through node a, node b's revocation
// list names its certificate and its router refuses it. Label scale.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <optional>
#include <thread>

#include "common/files.h"
#include "common/subprocess.h"
#include "common/tls.h"
#include "crl_serials.h"
#include "mariadb_server.h"
#include "oma/crypto.h"
#include "oma/db/migrations.h"
#include "oma_process.h"
#include "oma_service.h"
#include "protocol/version.h"
#include "support/files.h"
#include "support/net.h"
#include "support/temp_dir.h"
#include "support/x509.h"
#include "support/eventually.h"

namespace mk::oma::test {
namespace {

namespace fs = std::filesystem;

using mk::test::eventually;

// Whether libnbd gets through the TLS handshake on localhost:port with the certificates
// directory `dir` (it lists the exports); `err` gets nbdinfo's.
bool handshake(const std::string& dir, int port, std::string* err = nullptr) {
  mk::test::TempDir log("mk-nbdinfo");
  std::string out;
  int rc = mk::run_capture({"nbdinfo", "--list", fmt::format("nbds://localhost:{}/?tls-certificates={}", port, dir)},
                           out, log.file("err"));
  if (err) *err = mk::test::read_file(log.file("err"));
  return rc == 0;
}

std::string ssh_public_key(const std::string& file) {
  std::string out;
  if (mk::run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", file}, out) != 0)
    throw Error("ssh-keygen failed");
  std::string key = mk::test::read_file(file + ".pub");
  while (!key.empty() && (key.back() == '\n' || key.back() == ' ')) key.pop_back();
  return key;
}

// Prints the nodes' logs when the test failed (or threw), before their directory goes.
struct LogsOnFailure {
  std::vector<std::string> logs;
  ~LogsOnFailure() {
    if (!::testing::Test::HasFailure() && std::uncaught_exceptions() == 0) return;
    for (const auto& l : logs) std::cerr << l << ":\n" << mk::test::log_tail(l, 8000) << "\n";
  }
};

// Runs `start` on a thread of its own that then stays until this object goes (the
// processes it spawned live as long as their spawning thread).
class StarterThread {
 public:
  explicit StarterThread(std::function<void()> start)
      : thread_([this, start = std::move(start)] {
          try {
            start();
          } catch (const std::exception& e) {
            error_ = e.what();
          }
          started_.set_value();
          end_.get_future().wait();
        }) {}
  ~StarterThread() {
    end_.set_value();
    thread_.join();
  }
  // Waits for `start` to return; its exception's message, or "".
  std::string wait_started() {
    started_.get_future().wait();
    return error_;
  }

 private:
  std::promise<void> started_, end_;
  std::string error_;
  std::thread thread_;
};

int nbd_port_of(ApiClient& api, const std::string& node_id) {
  HttpReply r = api.get("/api/v1/nodes");
  for (const auto& n : r.body["nodes"])
    if (n["node_id"] == node_id) return n["nbd_port"];
  throw Error("node " + node_id + " is not registered: " + r.raw);
}

TEST(OmaNodesX509, AVmaEnrolledThroughOneNodeIsTrustedAndRevokedByTheOther) {
  MariadbServer server;
  std::string url = server.create_database("oma_x509");
  mk::test::TempDir dir("mk-oma-x509-nodes");
  LogsOnFailure logs{{dir.file("oma-a.log"), dir.file("oma-b.log")}};
  fs::create_directories(dir.file("pki"));
  const std::string operator_dir = mk::test::make_x509_pki(dir.file("pki")).server;
  const std::string host_key = dir.file("ssh_host_ed25519_key");
  ssh_public_key(host_key);
  // One service: every node has the same secrets key (it opens the CA's sealed key).
  const std::string data_a = dir.file("oma-a"), data_b = dir.file("oma-b");
  fs::create_directories(data_a);
  fs::create_directories(data_b);
  SecretBox key(data_a + "/secrets.key");
  fs::copy_file(data_a + "/secrets.key", data_b + "/secrets.key");
  auto args = [&](const std::string& id) {
    return std::vector<std::string>{"--database", url, "--node-id", id, "--node-lease-ms", "3000",
                                    "--tls-certificates", operator_dir, "--ssh-host-key-file", host_key + ".pub"};
  };
  {  // The schema first: two nodes migrating one empty database at once is another matter.
    auto database = db::open_database(url);
    db::migrate(*database);
  }
  // Both nodes start at once: each may make a CA; the database keeps the first stored.
  // Node b starts from a thread that lives as long as the test: its process gets
  // SIGTERM when the thread that spawned it ends (PR_SET_PDEATHSIG).
  std::optional<OmaProcess> a, b;
  std::string failed;
  StarterThread starter([&] { b.emplace(data_b, "http://127.0.0.1:1", dir.file("oma-b.log"), args("oma-b")); });
  a.emplace(data_a, "http://127.0.0.1:1", dir.file("oma-a.log"), args("oma-a"));
  failed = starter.wait_started();
  ASSERT_TRUE(b) << failed;
  EXPECT_EQ(mk::test::read_file(data_a + "/nbd-x509/client-ca/ca-cert.pem"),
            mk::test::read_file(data_b + "/nbd-x509/client-ca/ca-cert.pem"))
      << "each node made its own client CA";
  const std::string token = read_admin_token(fs::exists(data_a + "/admin.token") ? data_a : data_b);
  ApiClient api_a(a->port, token), api_b(b->port, token);

  // A VMA pairs through node a and is approved there.
  HttpReply bundle = api_a.post("/api/v1/vmas/pairing-bundles", "{}");
  ASSERT_EQ(bundle.status, 201) << bundle.raw;
  const std::string vma = dir.file("vma");
  fs::create_directories(vma);
  nlohmann::json enrol = {{"protocol_version", protocol::kVersion},
                          {"name", "site-a"},
                          {"vcenter", "vc.example"},
                          {"ssh_public_key", ssh_public_key(dir.file("vma_ssh_key"))},
                          {"nbd_client_csr", tls::make_key_and_csr(vma + "/client-key.pem", "vma")}};
  httplib::Client http("127.0.0.1", a->port);
  auto enrolled = http.Post("/api/v1/vmas/enroll",
                            {{"Authorization", "Pairing " + bundle.body["pairing_code"].get<std::string>()}},
                            enrol.dump(), "application/json");
  ASSERT_TRUE(enrolled);
  ASSERT_EQ(enrolled->status, 202) << enrolled->body;
  auto reply = nlohmann::json::parse(enrolled->body);
  const std::string vma_id = reply["vma_id"], cert = reply["nbd_client_cert"];
  write_private_file(vma + "/client-cert.pem", cert);
  write_private_file(vma + "/ca-cert.pem", bundle.body["nbd_ca_cert"].get<std::string>());
  HttpReply approved = api_a.post("/api/v1/vmas/" + vma_id + "/approve", "");
  ASSERT_EQ(approved.status, 200) << approved.raw;

  // Node b's router takes its certificate (once b has followed the approval).
  const int port_a = nbd_port_of(api_a, "oma-a"), port_b = nbd_port_of(api_b, "oma-b");
  std::string err;
  EXPECT_TRUE(handshake(vma, port_a, &err)) << err;
  EXPECT_TRUE(eventually([&] { return handshake(vma, port_b, &err); })) << err;

  // Revoked through node a: node b lists it and refuses it.
  HttpReply revoked = api_a.post("/api/v1/vmas/" + vma_id + "/revoke", "");
  ASSERT_EQ(revoked.status, 200) << revoked.raw;
  const std::string crl_b = data_b + "/nbd-x509/nbdkit/ca-crl.pem";
  EXPECT_TRUE(eventually([&] { return revoked_serials(crl_b).count(tls::certificate_serial(cert)) == 1; }))
      << "node b's revocation list does not name the certificate revoked through node a";
  EXPECT_FALSE(handshake(vma, port_b, &err)) << "node b still lets the revoked VMA in";
  EXPECT_FALSE(handshake(vma, port_a, &err)) << "node a still lets the revoked VMA in";
}

}  // namespace
}  // namespace mk::oma::test
