// NbdClientCa over a real database (SQLite here; two oma nodes on MariaDB in
// tests/oma/nbd_x509_nodes_test.cpp): one client CA for the whole service (issue 18).
// An OMA from before, whose CA is in its data directory, adopts it into the database
// with the certificates it issued (they stay valid); a node whose own CA differs takes
// the database's; each node's revocation list names every node's certificates.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>

#include "client_ca_checks.h"
#include "common/files.h"
#include "common/tls.h"
#include "crl_serials.h"
#include "oma/db/migrations.h"
#include "oma/db/sealed_values.h"
#include "oma/db/sqlite_database.h"
#include "oma/pairing/nbd_client_ca.h"
#include "support/files.h"
#include "support/temp_dir.h"
#include "support/x509.h"

namespace mk::oma::test {
namespace {

namespace fs = std::filesystem;

const std::string kVma1 = "0f3c6c1e-2b1a-4c52-9f7e-6f2a1d9e0a01", kVma2 = "0f3c6c1e-2b1a-4c52-9f7e-6f2a1d9e0a02";

struct NbdClientCaShared : ::testing::Test {
  NbdClientCaShared() {
    fs::create_directories(dir.file("pki"));
    operator_dir = mk::test::make_x509_pki(dir.file("pki")).server;
    db::migrate(database);
  }
  mk::test::TempDir dir{"mk-oma-client-ca"};
  std::string operator_dir;
  db::SqliteDatabase database{dir.file("oma.db")};
  SecretBox secrets{dir.file("secrets.key")};
  NbdCaRepository shared{database};
};

TEST_F(NbdClientCaShared, AnOmaWithItsOwnCaAdoptsItIntoTheDatabaseAndItsCertificatesStayValid) {
  const std::string state = dir.file("a/nbd-x509");
  const std::string issued = make_own_ca_state(state, kVma1);
  const std::string own_ca = mk::test::read_file(state + "/client-ca/ca-cert.pem");
  const std::string own_key = mk::test::read_file(state + "/client-ca/ca-key.pem");

  NbdClientCa ca(state, operator_dir, database, secrets, "");
  auto stored = shared.find_ca();
  ASSERT_TRUE(stored) << "the CA is the service's now";
  EXPECT_EQ(stored->cert_pem, own_ca);
  EXPECT_EQ(secrets.open(stored->key_sealed, seal_binding(kNbdCaKeyPurpose, kNbdClientCaName)), own_key);
  EXPECT_EQ(stored->key_sealed.find("PRIVATE KEY"), std::string::npos) << "sealed, never in clear";
  EXPECT_EQ(mk::test::read_file(state + "/client-ca/ca-cert.pem"), own_ca) << "unchanged: its VMAs keep connecting";
  EXPECT_EQ(shared.certificates().at(kVma1), issued);
  EXPECT_EQ(mk::test::file_mode(state + "/client-ca/ca-key.pem"), 0600);

  ca.sync({});  // kVma1 not approved: on the list
  EXPECT_EQ(revoked_serials(ca.nbdkit_dir() + "/ca-crl.pem"), std::set<std::string>{tls::certificate_serial(issued)});
  ca.sync({kVma1});
  EXPECT_TRUE(revoked_serials(ca.nbdkit_dir() + "/ca-crl.pem").empty());

  // The next start finds its CA in the database: nothing changes, not even its own certificate.
  const std::string own_client = mk::test::read_file(ca.nbdkit_dir() + "/client-cert.pem");
  NbdClientCa again(state, operator_dir, database, secrets, "");
  EXPECT_EQ(mk::test::read_file(again.nbdkit_dir() + "/client-cert.pem"), own_client);
  EXPECT_FALSE(fs::exists(state + "/client-ca/ca-cert.pem.replaced-" + tls::certificate_serial(own_ca)));
}

TEST_F(NbdClientCaShared, ANodeWithAnotherCaTakesTheDatabasesAndEveryNodeRevokesEveryNodesCertificates) {
  // Node a started first: a new CA in the database.
  NbdClientCa a(dir.file("a/nbd-x509"), operator_dir, database, secrets, "oma-a");
  const std::string service_ca = mk::test::read_file(a.ca_cert_file());
  EXPECT_EQ(shared.find_ca()->cert_pem, service_ca);
  EXPECT_EQ(shared.find_ca()->created_by, "oma-a");

  // Node b had a CA of its own (and issued a certificate with it) on another connection.
  const std::string b_state = dir.file("b/nbd-x509");
  make_own_ca_state(b_state, kVma2);
  const std::string b_old_ca = mk::test::read_file(b_state + "/client-ca/ca-cert.pem");
  db::SqliteDatabase b_connection(dir.file("oma.db"));
  NbdClientCa b(b_state, operator_dir, b_connection, secrets, "oma-b");
  EXPECT_EQ(mk::test::read_file(b.ca_cert_file()), service_ca) << "the database wins";
  EXPECT_EQ(mk::test::read_file(b_state + "/client-ca/ca-cert.pem.replaced-" + tls::certificate_serial(b_old_ca)),
            b_old_ca);
  EXPECT_EQ(shared.certificates().count(kVma2), 0u) << "a certificate of the replaced CA is not the service's";
  EXPECT_EQ(shared.find_ca()->created_by, "oma-a");

  // A VMA enrols through a: b's revocation list names its certificate until it is approved.
  std::string csr = tls::make_key_and_csr(dir.file("vma1-key.pem"), kVma1);
  std::string cert = a.sign(kVma1, csr);
  a.store(kVma1, cert);
  b.sync({});
  EXPECT_EQ(mk::test::read_file(b.nbdkit_dir() + "/client-ca.pem"), service_ca);
  EXPECT_EQ(revoked_serials(b.nbdkit_dir() + "/ca-crl.pem"), std::set<std::string>{tls::certificate_serial(cert)});
  EXPECT_TRUE(b.sync({kVma1})) << "approved: off the list";
  EXPECT_TRUE(revoked_serials(b.nbdkit_dir() + "/ca-crl.pem").empty());
  // b's own client certificate is made again by the service's CA: b's router (trusting
  // only that CA) lets b's own checks in.
  EXPECT_TRUE(signed_by(mk::test::read_file(b.nbdkit_dir() + "/client-cert.pem"), service_ca));
  EXPECT_FALSE(signed_by(mk::test::read_file(b.nbdkit_dir() + "/client-cert.pem"), b_old_ca));
  a.forget(kVma1);
  EXPECT_TRUE(shared.certificates().empty());
}

}  // namespace
}  // namespace mk::oma::test
