// The schema and the data layer on a real MariaDB server started by the test: every
// repository scenario (repository_scenarios.h), each on its own fresh database, plus
// what only a client/server database shows (two connections, one active job per VM
// between them).
#include <gtest/gtest.h>

#include <cctype>
#include <thread>

#include "mariadb_server.h"
#include "oma/db/migrations.h"
#include "oma/db/nbd_ca_repository.h"
#include "oma/db/sealed_values.h"
#include "oma/errors.h"
#include "repository_scenarios.h"
#include "support/temp_dir.h"
#include "support/x509.h"

namespace mk::oma::test {
namespace {

TEST(MariadbRepositories, EveryScenarioOnARealServer) {
  MariadbServer server;
  int n = 0;
  for (const auto& [name, scenario] : repository_scenarios()) {
    SCOPED_TRACE(name);
    auto database = db::open_database(server.create_database("oma_" + std::to_string(n++)));
    EXPECT_EQ(database->engine(), "mariadb");
    db::migrate(*database);
    Repositories repos(*database);
    scenario(*database, repos);
  }

  // Two OMA connections to one database (e.g. the service and a CLI): the active-job
  // claim is decided by the server, not by either process.
  std::string url = server.create_database("oma_shared");
  auto a = db::open_database(url), b = db::open_database(url);
  db::migrate(*a);
  EXPECT_EQ(db::migrate(*b), 0);
  Repositories sa(*a), sb(*b);
  sa.vms.add_vm(vm_record(kVm1), disk_records(1));
  sa.jobs.create_job(job_record("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b1001", kVm1), {});
  EXPECT_THROW(sb.jobs.create_job(job_record("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b1002", kVm1), {}), Conflict);
  EXPECT_EQ(sb.jobs.active_jobs().size(), 1u);
}

// Two nodes that start at once each store an NBD client CA of their own: the database
// keeps one, and both get that one back (issue 18). Each round races two connections
// from two threads on an empty table.
TEST(MariadbRepositories, TwoNodesStoringTheirNbdClientCaAtOnceBothGetTheOneStored) {
  MariadbServer server;
  std::string url = server.create_database("oma_ca_race");
  auto a = db::open_database(url), b = db::open_database(url);
  db::migrate(*a);
  mk::test::TempDir dir("mk-oma-ca-race");
  SecretBox box(dir.file("secrets.key"));
  NbdCaRepository ca_a(*a), ca_b(*b);
  auto candidate = [&](const std::string& cert) {
    NbdClientCaRecord r;
    r.cert_pem = cert;
    r.key_sealed = box.seal("key", seal_binding(kNbdCaKeyPurpose, r.name));
    return r;
  };
  for (int round = 0; round < 20; ++round) {
    SCOPED_TRACE(round);
    a->exec("DELETE FROM nbd_client_ca");
    NbdClientCaRecord got_a, got_b;
    std::thread ta([&] { got_a = ca_a.insert_ca_if_absent(candidate("CA of a")); });
    std::thread tb([&] { got_b = ca_b.insert_ca_if_absent(candidate("CA of b")); });
    ta.join();
    tb.join();
    EXPECT_EQ(got_a.cert_pem, got_b.cert_pem);
    EXPECT_EQ(got_a.key_sealed, got_b.key_sealed);
    EXPECT_EQ(a->query("SELECT COUNT(*) FROM nbd_client_ca").at(0).i64(0), 1);
  }
}

// A transaction the server rolled back without an error (Galera can lose the error of a
// brute-force abort between two statements; the ROLLBACK here plays that abort): the
// COMMIT finds its token gone, nothing written after the abort is committed, and the
// whole transaction runs again.
TEST(MariadbRepositories, ATransactionRolledBackWithoutAnErrorIsCaughtAtCommitAndRunAgain) {
  MariadbServer server;
  std::string url = server.create_database("oma_silent");
  auto database = db::open_database(url);
  database->exec("CREATE TABLE t (name VARCHAR(64) PRIMARY KEY)");
  int attempts = 0;
  database->transaction([&] {
    ++attempts;
    database->exec("INSERT INTO t (name) VALUES (?)", {std::string("attempt ") + std::to_string(attempts)});
    if (attempts == 1) {
      database->exec("ROLLBACK");
      database->exec("INSERT INTO t (name) VALUES ('after the abort')");
    }
  });
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(database->retries(), 1);
  auto rows = database->query("SELECT name FROM t ORDER BY name");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows.at(0).str(0), "attempt 2");

  // Reads and writes outside a transaction still commit at once (autocommit is back on),
  // as a second connection sees.
  database->exec("INSERT INTO t (name) VALUES ('outside')");
  auto other = db::open_database(url);
  EXPECT_EQ(other->query("SELECT COUNT(*) FROM t").at(0).i64(0), 2);
}

// TLS as an option of the URL (issue 16): the server requires it, so the plain URL is
// refused; with ssl_ca the session is encrypted and the server verified; a CA that did
// not sign the server's certificate is refused.
TEST(MariadbRepositories, TlsWithTheServerVerifiedAgainstTheGivenCa) {
  MariadbServer server(true);
  std::string url = server.create_database("oma_tls");
  EXPECT_THROW(db::open_database(url), Error);
  auto database = db::open_database(url + "&ssl_ca=" + server.ca_file());
  EXPECT_NE(database->describe().find("(TLS)"), std::string::npos) << database->describe();
  auto cipher = database->query("SHOW SESSION STATUS LIKE 'Ssl_cipher'");
  ASSERT_EQ(cipher.size(), 1u);
  EXPECT_FALSE(cipher[0].str(1).empty());
  db::migrate(*database);
  Repositories repos(*database);
  repos.vms.add_vm(vm_record(kVm1), disk_records(1));
  EXPECT_EQ(repos.vms.list_vms().size(), 1u);

  mk::test::TempDir other("mk-mariadb-other-ca");
  auto pki = mk::test::make_x509_pki(other.path());
  try {
    db::open_database(url + "&ssl_ca=" + pki.client + "/ca-cert.pem");
    ADD_FAILURE() << "connected to a server whose certificate another CA signed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
  }
  EXPECT_THROW(db::open_database(url + "&ssl_ca=relative/ca.pem"), UsageError);
}

TEST(MariadbRepositories, RejectsMalformedUrls) {
  EXPECT_THROW(db::open_database("mariadb://oma@host/db;drop"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://host/db"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://oma@host:99999999/db"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://oma@host/db?password=x"), UsageError);
  EXPECT_THROW(db::open_database("postgres://x"), UsageError);
  // Several servers (a Galera cluster): each host:port checked; a socket names one server.
  EXPECT_THROW(db::open_database("mariadb://oma@h1:3306,h2:x/db"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://oma@h1:3306,h;2/db"), UsageError);
  EXPECT_THROW(db::open_database("mariadb://oma@h1,h2/db?socket=/run/mysqld/mysqld.sock"), UsageError);
}

}  // namespace
}  // namespace mk::oma::test
