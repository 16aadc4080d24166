// The service's one NBD client CA over a real 3-node MariaDB Galera cluster (issue 18;
// label scale, beside galera_test.cpp). Three OMA nodes, each with its own data
// directory and its own connection to a different Galera server (its own first, the
// others to fail over to, as `oma --database` names them), construct NbdClientCa (what
// every oma runs at start) at the same moment, released together by a latch, on an empty
// database. Round after round (tables emptied, data directories new):
//
//  * every node ends with the one CA the database holds: a single row, read the same on
//    every server; each node's STATE/client-ca has that certificate and its key (the
//    stored key opened), and its own client certificate is signed by it; no node kept a
//    CA of its own, and no error (a certification conflict's retry) escaped;
//  * in every other round each node starts with a CA of its own from before and a
//    certificate it issued: the node whose CA was stored keeps its CA and that
//    certificate becomes the service's; the two others keep their old CA beside
//    (.replaced-<serial>) and their certificates are not the service's;
//  * a certificate issued through one node is listed by every node (the shared table,
//    read on each node's own server): each node's revocation list names it until it is
//    allowed, and names the winner's adopted certificate likewise.
//
// Whether the inserts really collided is printed for each round: the transactions the
// nodes ran again, and the cluster's certification failures and brute-force aborts.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <latch>
#include <map>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "client_ca_checks.h"
#include "common/tls.h"
#include "crl_serials.h"
#include "galera_cluster.h"
#include "oma/crypto.h"
#include "oma/db/migrations.h"
#include "oma/db/nbd_ca_repository.h"
#include "oma/db/sealed_values.h"
#include "oma/pairing/nbd_client_ca.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "support/x509.h"

namespace mk::oma::test {
namespace {

constexpr int kCaNodes = 3;
constexpr int kCaRounds = 10;  // even rounds: new data directories; odd: each node with its own CA from before

std::string ca_node_id(int i) { return fmt::format("oma-{}", i); }

// A VMA id (a UUID) for round `round`, number `n`.
std::string ca_vma_id(int round, int n) { return fmt::format("6a1d3b2e-7c4f-4e8a-9b1d-{:04x}{:08x}", round, n); }

// What the cluster counted so far: local transactions that failed certification, and
// local transactions aborted by another node's replicated commit, summed over the nodes.
struct ConflictCounts {
  long long cert_failures = 0, bf_aborts = 0;
};

ConflictCounts conflict_counts(GaleraCluster& cluster) {
  ConflictCounts c;
  for (int i = 0; i < cluster.size(); ++i) {
    c.cert_failures += std::stoll(cluster.status(i, "WSREP_LOCAL_CERT_FAILURES"));
    c.bf_aborts += std::stoll(cluster.status(i, "WSREP_LOCAL_BF_ABORTS"));
  }
  return c;
}

TEST(Galera, ThreeNodesCreatingTheNbdClientCaAtOnceOnThreeServersAllTakeTheOneStored) {
  namespace fs = std::filesystem;
  GaleraCluster cluster;
  cluster.create_database("oma_nbd_ca");
  mk::test::TempDir dir("mk-galera-ca");
  fs::create_directories(dir.file("pki"));
  const std::string operator_dir = mk::test::make_x509_pki(dir.file("pki")).server;
  const std::string key_file = dir.file("secrets.key");
  SecretBox made(key_file);  // the service's key: every node has a copy of it
  std::vector<std::unique_ptr<db::Database>> dbs;
  std::vector<SecretBox> boxes;
  for (int i = 0; i < kCaNodes; ++i) {
    dbs.push_back(db::open_database(cluster.url("oma_nbd_ca", i)));
    boxes.push_back(SecretBox::existing(key_file));
  }
  db::migrate(*dbs[0]);

  long long total_retries = 0, total_cert_failures = 0, total_bf_aborts = 0;
  int rounds_with_conflict = 0;
  for (int round = 0; round < kCaRounds; ++round) {
    SCOPED_TRACE(fmt::format("round {}", round));
    const bool own = round % 2 == 1;
    dbs[0]->exec("DELETE FROM nbd_client_certs");
    dbs[0]->exec("DELETE FROM nbd_client_ca");
    std::vector<std::string> states(kCaNodes), own_ca(kCaNodes), own_issued(kCaNodes);
    for (int i = 0; i < kCaNodes; ++i) {
      states[i] = dir.file(fmt::format("round{}/node{}/nbd-x509", round, i));
      fs::create_directories(states[i]);
      if (own) {
        own_issued[i] = make_own_ca_state(states[i], ca_vma_id(round, i));
        own_ca[i] = mk::test::read_file(states[i] + "/client-ca/ca-cert.pem");
      }
    }
    std::vector<int64_t> retries_before(kCaNodes);
    for (int i = 0; i < kCaNodes; ++i) retries_before[i] = dbs[i]->retries();
    const ConflictCounts before = conflict_counts(cluster);

    std::vector<std::unique_ptr<NbdClientCa>> cas(kCaNodes);
    std::vector<std::string> errors(kCaNodes);
    std::latch start(kCaNodes);
    std::vector<std::thread> threads;
    for (int i = 0; i < kCaNodes; ++i) {
      threads.emplace_back([&, i] {
        start.arrive_and_wait();
        try {
          cas[i] = std::make_unique<NbdClientCa>(states[i], operator_dir, *dbs[i], boxes[i], ca_node_id(i));
        } catch (const std::exception& e) {
          errors[i] = e.what();
        }
      });
    }
    for (auto& t : threads) t.join();

    const ConflictCounts after = conflict_counts(cluster);
    std::string retried;
    long long round_retries = 0;
    for (int i = 0; i < kCaNodes; ++i) {
      int64_t n = dbs[i]->retries() - retries_before[i];
      round_retries += n;
      retried += fmt::format("{}{}", i ? " " : "", n);
    }
    long long cert_failures = after.cert_failures - before.cert_failures, bf_aborts = after.bf_aborts - before.bf_aborts;
    total_retries += round_retries;
    total_cert_failures += cert_failures;
    total_bf_aborts += bf_aborts;
    if (round_retries + cert_failures + bf_aborts > 0) ++rounds_with_conflict;

    for (int i = 0; i < kCaNodes; ++i) ASSERT_EQ(errors[i], "") << "node " << i << " did not start";
    auto stored = NbdCaRepository(*dbs[0]).find_ca();
    ASSERT_TRUE(stored) << "no CA stored";
    int winner = -1;
    for (int i = 0; i < kCaNodes; ++i)
      if (stored->created_by == ca_node_id(i)) winner = i;
    ASSERT_NE(winner, -1) << "the CA was stored by '" << stored->created_by << "'";
    std::printf("Galera NBD CA round %d (%s): stored by node %d; transactions run again per node: %s; certification "
                "failures %lld, brute-force aborts %lld\n",
                round, own ? "each node with its own CA" : "new data directories", winner, retried.c_str(),
                cert_failures, bf_aborts);
    const std::string key = boxes[0].open(stored->key_sealed, seal_binding(kNbdCaKeyPurpose, kNbdClientCaName));

    for (int i = 0; i < kCaNodes; ++i) {
      SCOPED_TRACE(fmt::format("node {}", i));
      // One row, the same on every server.
      EXPECT_EQ(dbs[i]->query("SELECT COUNT(*) FROM nbd_client_ca").at(0).i64(0), 1);
      auto seen = NbdCaRepository(*dbs[i]).find_ca();
      ASSERT_TRUE(seen);
      EXPECT_EQ(seen->cert_pem, stored->cert_pem);
      EXPECT_EQ(seen->key_sealed, stored->key_sealed);
      // The node uses it: its CA files, and its own client certificate signed by it.
      EXPECT_EQ(mk::test::read_file(cas[i]->ca_cert_file()), stored->cert_pem);
      EXPECT_EQ(mk::test::read_file(states[i] + "/client-ca/ca-key.pem"), key);
      EXPECT_TRUE(signed_by(mk::test::read_file(cas[i]->nbdkit_dir() + "/client-cert.pem"), stored->cert_pem));
      if (!own) continue;
      const std::string replaced = states[i] + "/client-ca/ca-cert.pem.replaced-" + tls::certificate_serial(own_ca[i]);
      if (i == winner) {
        EXPECT_EQ(stored->cert_pem, own_ca[i]) << "the node that stored its CA kept it";
        EXPECT_FALSE(fs::exists(replaced));
      } else {
        EXPECT_NE(stored->cert_pem, own_ca[i]);
        EXPECT_EQ(mk::test::read_file(replaced), own_ca[i]) << "a node that lost kept its old CA beside";
        EXPECT_FALSE(signed_by(own_issued[i], stored->cert_pem));
      }
    }

    // A VMA enrols through one node (another each round); every node lists its certificate.
    const int issuer = round % kCaNodes;
    const std::string vma = ca_vma_id(round, 100);
    const std::string csr = tls::make_key_and_csr(dir.file(fmt::format("round{}/vma-key.pem", round)), vma);
    const std::string cert = cas[issuer]->sign(vma, csr);
    cas[issuer]->store(vma, cert);
    EXPECT_TRUE(signed_by(cert, stored->cert_pem));
    std::map<std::string, std::string> expected{{vma, cert}};
    std::set<std::string> allowed{vma};
    if (own) {
      // The winner's certificate from before is the service's; the losers' are not.
      expected[ca_vma_id(round, winner)] = own_issued[winner];
      allowed.insert(ca_vma_id(round, winner));
    }
    std::set<std::string> serials;
    for (const auto& [id, pem] : expected) serials.insert(tls::certificate_serial(pem));
    for (int i = 0; i < kCaNodes; ++i) {
      SCOPED_TRACE(fmt::format("node {}", i));
      EXPECT_EQ(NbdCaRepository(*dbs[i]).certificates(), expected);
      cas[i]->sync({});
      EXPECT_EQ(mk::test::read_file(cas[i]->nbdkit_dir() + "/client-ca.pem"), stored->cert_pem);
      EXPECT_EQ(revoked_serials(cas[i]->nbdkit_dir() + "/ca-crl.pem"), serials) << "not allowed: listed";
      EXPECT_TRUE(cas[i]->sync(allowed));
      EXPECT_TRUE(revoked_serials(cas[i]->nbdkit_dir() + "/ca-crl.pem").empty()) << "allowed: off the list";
    }
  }
  std::printf("Galera NBD CA: %d of %d rounds collided: transactions run again %lld, certification failures %lld, "
              "brute-force aborts %lld\n",
              rounds_with_conflict, kCaRounds, total_retries, total_cert_failures, total_bf_aborts);
}

}  // namespace
}  // namespace mk::oma::test
