// NbdCaRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h): one
// NBD client CA for the service, the first stored wins; its key sealed like every other
// secret (a key rotation re-seals it); the certificates it issued, by VMA.
#include <gtest/gtest.h>

#include "oma/db/nbd_ca_repository.h"
#include "oma/db/sealed_values.h"
#include "repository_scenarios.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

NbdClientCaRecord ca_record(const SecretBox& box, const std::string& cert, const std::string& node) {
  NbdClientCaRecord r;
  r.cert_pem = cert;
  r.key_sealed = box.seal("key of " + cert, seal_binding(kNbdCaKeyPurpose, r.name));
  r.created_by = node;
  r.created_at = 1000;
  return r;
}

void TheFirstNbdClientCaStoredIsTheServices(db::Database& database, Repositories&) {
  mk::test::TempDir dir("mk-oma-nbd-ca");
  const std::string key = dir.file("secrets.key");
  auto box = open_secrets_key(database, key);
  NbdCaRepository cas(database);
  EXPECT_FALSE(cas.find_ca());
  NbdClientCaRecord a = cas.insert_ca_if_absent(ca_record(*box, "CA of node a", "oma-a"));
  EXPECT_EQ(a.cert_pem, "CA of node a");
  EXPECT_EQ(a.created_by, "oma-a");
  // A node that comes second gets the stored CA back, not its own.
  NbdClientCaRecord b = cas.insert_ca_if_absent(ca_record(*box, "CA of node b", "oma-b"));
  EXPECT_EQ(b.cert_pem, "CA of node a");
  EXPECT_EQ(b.key_sealed, a.key_sealed);
  EXPECT_EQ(cas.find_ca()->cert_pem, "CA of node a");
  EXPECT_EQ(box->open(cas.find_ca()->key_sealed, seal_binding(kNbdCaKeyPurpose, kNbdClientCaName)),
            "key of CA of node a");

  // The key is one of the database's sealed values: a rotation re-seals it.
  int64_t sealed = count_sealed_values(database);
  EXPECT_GE(sealed, 1);
  KeyRotation rotation = rotate_secrets_key(database, key);
  EXPECT_EQ(rotation.values, sealed);
  EXPECT_EQ(SecretBox::existing(key).open(cas.find_ca()->key_sealed, seal_binding(kNbdCaKeyPurpose, kNbdClientCaName)),
            "key of CA of node a");
}

void IssuedCertificatesAreKeptByVma(db::Database& database, Repositories&) {
  NbdCaRepository cas(database);
  const std::string v1 = "0f3c6c1e-2b1a-4c52-9f7e-6f2a1d9e0a01", v2 = "0f3c6c1e-2b1a-4c52-9f7e-6f2a1d9e0a02";
  EXPECT_TRUE(cas.certificates().empty());
  cas.put_certificate(v1, "cert 1", 1);
  cas.put_certificate(v1, "cert 1 again", 2);  // replaced
  EXPECT_TRUE(cas.add_certificate_if_absent(v2, "cert 2", 3));
  EXPECT_FALSE(cas.add_certificate_if_absent(v2, "another cert 2", 4));  // adoption keeps what is there
  auto all = cas.certificates();
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all.at(v1), "cert 1 again");
  EXPECT_EQ(all.at(v2), "cert 2");
  cas.remove_certificate(v1);
  EXPECT_EQ(cas.certificates().count(v1), 0u);
}

}  // namespace

Scenarios nbd_ca_repository_scenarios() {
  return {{"TheFirstNbdClientCaStoredIsTheServices", TheFirstNbdClientCaStoredIsTheServices},
          {"IssuedCertificatesAreKeptByVma", IssuedCertificatesAreKeptByVma}};
}

}  // namespace mk::oma::test
