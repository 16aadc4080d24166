// GaleraCluster: a real MariaDB Galera cluster for one test process (issue 18): `size`
// mariadbd processes with wsrep on (Debian's galera-4 provider), each with its own data
// directory, SQL port and Unix socket, group-communication port (gmcast.listen_addr),
// IST port and SST port, all on 127.0.0.1 in a block of ports the cluster holds
// (mk::test::PortBlock: below the kernel's ephemeral range and locked against concurrent
// tests, so that no other test and no outgoing connection takes one before its node binds
// it, also when a node starts again; with ports that were merely free a moment before, a
// joiner once aborted because its IST port was taken). Node 0 bootstraps the cluster
// (gcomm:// with --wsrep-new-cluster); the others join it and receive the data by SST
// (rsync). A user "oma" with a random password (0600 file) is made once and replicates
// to every node.
//
// The SST's rsync daemon runs as "nobody" when the server runs as root (as tests do
// here), so each joiner's data directory is world-writable and the path to it
// traversable; nothing secret is in it.
//
// stop(i) stops node i by PID (SIGTERM: it leaves the cluster cleanly, the others keep
// quorum); start(i) starts it again on the same ports and data directory: it rejoins
// and catches up by IST. Every node is stopped by PID when the cluster is destroyed.
// Not thread-safe.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "oma/db/database.h"
#include "support/net.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

class GaleraCluster {
 public:
  explicit GaleraCluster(int size = 3);
  ~GaleraCluster();
  GaleraCluster(const GaleraCluster&) = delete;
  GaleraCluster& operator=(const GaleraCluster&) = delete;

  int size() const { return static_cast<int>(nodes_.size()); }
  int port(int i) const { return nodes_.at(i).port; }
  // Creates an empty database `name` (lowercase letters, digits, '_') on the cluster.
  void create_database(const std::string& name);
  // The OMA's URL for database `name` on node `first` alone (failover = false), or with
  // every other node after it, in order, as the hosts to fail over to.
  std::string url(const std::string& name, int first, bool failover = true) const;

  void stop(int i);
  void start(int i);  // returns once the node is synced with the cluster
  bool running(int i);
  // A wsrep status variable of node i ("wsrep_cluster_size", "wsrep_local_state_comment"),
  // read as root over the node's own socket.
  std::string status(int i, const std::string& variable);
  // root on node i over its Unix socket (a new connection).
  std::unique_ptr<db::Database> root(int i) const;

 private:
  struct Node {
    std::string dir;
    int port = 0, gcomm = 0, ist = 0, sst = 0;
    Subprocess server;
  };
  void launch(int i, bool bootstrap);
  void wait_synced(int i);
  std::string log(int i) const { return nodes_.at(i).dir + "/server.log"; }

  mk::test::TempDir dir_{"mk-galera"};
  mk::test::PortBlock ports_;  // 4 per node: SQL, gcomm, IST, SST
  std::vector<Node> nodes_;
};

}  // namespace mk::oma::test
