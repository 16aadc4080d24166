#include "galera_cluster.h"

#include <fmt/format.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/files.h"
#include "support/net.h"

namespace mk::oma::test {
namespace {

constexpr const char* kProvider = "/usr/lib/galera/libgalera_smm.so";

}  // namespace

GaleraCluster::GaleraCluster(int size) : ports_(4 * size) {
  if (!std::filesystem::exists(kProvider))
    throw Error(fmt::format("{} is missing: install galera-4 (scripts/install-deps)", kProvider));
  // rsync's daemon (SST) runs as nobody: it must reach the joiners' data directories.
  ::chmod(dir_.path().c_str(), 0755);
  nodes_.resize(size);
  for (int i = 0; i < size; ++i) {
    Node& n = nodes_[i];
    n.dir = dir_.file("node" + std::to_string(i));
    std::filesystem::create_directories(n.dir + "/data");
    std::filesystem::create_directories(n.dir + "/tmp");
    ::chmod(n.dir.c_str(), 0755);
    ::chmod((n.dir + "/data").c_str(), 0777);
    n.port = ports_.first() + 4 * i;
    n.gcomm = n.port + 1;
    n.ist = n.port + 2;
    n.sst = n.port + 3;
  }
  std::string out;
  int rc = run_capture({"mariadb-install-db", "--no-defaults", "--datadir=" + nodes_[0].dir + "/data", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db",
                        "--tmpdir=" + nodes_[0].dir + "/tmp"},
                       out, dir_.file("install.log"));
  if (rc != 0) throw Error("mariadb-install-db failed:\n" + mk::test::log_tail(dir_.file("install.log")));
  launch(0, true);
  wait_synced(0);
  // Joiners one at a time: each takes a full SST from a donor.
  for (int i = 1; i < size; ++i) {
    launch(i, false);
    wait_synced(i);
  }
  unsigned char pw[16];
  RAND_bytes(pw, sizeof pw);
  std::string password;
  for (unsigned char c : pw) password += fmt::format("{:02x}", c);
  write_private_file(dir_.file("oma.password"), password + "\n");
  // Random hex made here: it can be spelled inside the statement.
  root(0)->exec(fmt::format("CREATE USER 'oma'@'127.0.0.1' IDENTIFIED BY '{}'", password));
}

GaleraCluster::~GaleraCluster() {
  for (int i = size() - 1; i >= 0; --i) nodes_[i].server.stop(std::chrono::milliseconds(15000));
}

void GaleraCluster::launch(int i, bool bootstrap) {
  Node& n = nodes_.at(i);
  std::string peers;
  for (int j = 0; j < size(); ++j) {
    if (j == i) continue;
    peers += (peers.empty() ? "" : ",") + fmt::format("127.0.0.1:{}", nodes_[j].gcomm);
  }
  SpawnOptions o;
  o.stdout_path = o.stderr_path = log(i);
  std::vector<std::string> argv{
      "mariadbd", "--no-defaults", "--datadir=" + n.dir + "/data", "--socket=" + n.dir + "/s.sock",
      "--port=" + std::to_string(n.port), "--bind-address=127.0.0.1", "--user=root", "--skip-name-resolve",
      "--pid-file=" + n.dir + "/mariadbd.pid", "--log-error=" + log(i), "--tmpdir=" + n.dir + "/tmp",
      "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=16M", "--innodb-flush-log-at-trx-commit=2",
      "--binlog-format=ROW", "--default-storage-engine=InnoDB", "--innodb-autoinc-lock-mode=2",
      "--wsrep-on=ON", std::string("--wsrep-provider=") + kProvider, "--wsrep-cluster-name=mk-test",
      "--wsrep-cluster-address=gcomm://" + (bootstrap ? std::string() : peers),
      "--wsrep-node-address=127.0.0.1", "--wsrep-node-name=node" + std::to_string(i),
      // Short failure detection: a stopped node leaves at once, a killed one within seconds.
      fmt::format("--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};"
                  "gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT5S;pc.wait_prim_timeout=PT10S",
                  n.gcomm, n.ist),
      "--wsrep-sst-method=rsync", fmt::format("--wsrep-sst-receive-address=127.0.0.1:{}", n.sst)};
  if (bootstrap) argv.push_back("--wsrep-new-cluster");
  n.server = Subprocess::spawn(argv, o);
}

std::unique_ptr<db::Database> GaleraCluster::root(int i) const {
  return db::open_database(fmt::format("mariadb://root@localhost/mysql?socket={}/s.sock", nodes_.at(i).dir));
}

std::string GaleraCluster::status(int i, const std::string& variable) {
  auto rows = root(i)->query("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
                             {variable});
  return rows.empty() ? "" : rows[0].str(0);
}

void GaleraCluster::wait_synced(int i) {
  Node& n = nodes_.at(i);
  std::string last;
  for (int t = 0; t < 1200; ++t) {  // 120 s: an SST on a loaded machine
    if (!n.server.running())
      throw Error(fmt::format("Galera node {} exited while starting:\n{}", i, mk::test::log_tail(log(i), 4000)));
    try {
      last = status(i, "WSREP_LOCAL_STATE_COMMENT");
      if (last == "Synced" && status(i, "WSREP_READY") == "ON") return;
    } catch (const Error& e) {
      last = e.what();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  throw Error(fmt::format("Galera node {} did not reach Synced ({}):\n{}", i, last, mk::test::log_tail(log(i), 4000)));
}

void GaleraCluster::stop(int i) { nodes_.at(i).server.stop(std::chrono::milliseconds(30000)); }

bool GaleraCluster::running(int i) { return nodes_.at(i).server.running(); }

void GaleraCluster::start(int i) {
  launch(i, false);
  wait_synced(i);
}

void GaleraCluster::create_database(const std::string& name) {
  if (name.empty() || name.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") != std::string::npos)
    throw UsageError("database name: lowercase letters, digits and '_' only");
  auto r = root(0);
  r->exec("CREATE DATABASE " + name + " CHARACTER SET utf8mb4");
  r->exec("GRANT ALL PRIVILEGES ON " + name + ".* TO 'oma'@'127.0.0.1'");
}

std::string GaleraCluster::url(const std::string& name, int first, bool failover) const {
  std::string hosts = fmt::format("127.0.0.1:{}", port(first));
  if (failover) {
    for (int j = 0; j < size(); ++j)
      if (j != first) hosts += fmt::format(",127.0.0.1:{}", port(j));
  }
  return fmt::format("mariadb://oma@{}/{}?password_file={}", hosts, name, dir_.file("oma.password"));
}

}  // namespace mk::oma::test
