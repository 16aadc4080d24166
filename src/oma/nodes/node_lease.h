// NodeLease: this OMA process as one node of several over one database: it registers
// the node (NodeRepository), holds its lease with a background thread that renews it,
// and releases it at a clean stop.
//
// Lease times are the database's (see node_repository.h). The renewer renews every
// `renew_every`; a renewal the database refuses (the lease ran out, or another process
// took the node id) means the lease is lost: held() turns false at once, the loss is
// logged, and the renewer registers the node again, which succeeds only once nobody
// else holds the id (then held() is true again, with a new incarnation). When the
// database cannot be reached, the lease is counted as lost once a whole lease has passed
// (on this process's monotonic clock, which measures intervals only) since the start of
// the last renewal that succeeded: the database may have expired it by then.
//
// start() waits for the node id while another incarnation's lease is alive (a process
// of this node that died a moment ago: its lease runs out), at most `start_wait`, then
// throws Conflict naming the node (another process holds it and keeps renewing).
//
// Owns its thread; does not own the repository. start/stop from one thread; held(),
// grant() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "oma/db/node_repository.h"

namespace mk::oma {

struct NodeLeaseOptions {
  std::chrono::milliseconds lease{15000};
  std::chrono::milliseconds renew_every{5000};  // a third of the lease leaves two retries
  std::chrono::milliseconds start_wait{30000};
  // Called on the renewer's thread (and in start()) after each grant or renewal with the
  // moment the request began (this process's monotonic clock: the database's expiry is
  // at least a lease after it), and with nullopt when the lease is lost. How the app
  // binds its export servers' writes to the lease (ExportServerConfig::lease_file).
  std::function<void(std::optional<std::chrono::steady_clock::time_point>)> on_change;
};

class NodeLease {
 public:
  NodeLease(NodeRepository& nodes, NodeRecord self, NodeLeaseOptions options);
  ~NodeLease();
  NodeLease(const NodeLease&) = delete;
  NodeLease& operator=(const NodeLease&) = delete;

  // Registers the node and starts renewing. Throws Conflict (the id stays held by
  // another process), UsageError (invalid id) or mk::Error (database).
  void start();
  // Stops renewing and releases the lease (if still held). Idempotent.
  void stop();

  // Granted and renewed less than a lease ago (this process's monotonic clock): a
  // renewer stuck on a database that does not answer does not keep the lease held, as
  // the database may have expired it meanwhile.
  bool held() const;
  // The lease as last granted or renewed (incarnation 0 before start()).
  NodeLeaseGrant grant() const;
  const std::string& node_id() const { return self_.node_id; }
  // Records the API URL (known once the API listens) for the other nodes.
  void set_api_url(const std::string& url);

 private:
  void renew_loop();
  void renew_once();

  NodeRepository& nodes_;
  NodeRecord self_;
  NodeLeaseOptions options_;
  mutable std::mutex mu_;  // guards grant_, stopping_, self_.api_url, last_renewal_
  std::condition_variable cv_;
  NodeLeaseGrant grant_;
  bool stopping_ = false;
  std::atomic<bool> held_{false};
  std::chrono::steady_clock::time_point last_renewal_;  // start of the last renewal that succeeded
  std::thread renewer_;
};

}  // namespace mk::oma
