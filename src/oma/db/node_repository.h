// NodeRepository: the OMA nodes that share one database (oma_nodes) and their leases.
//
// A large site runs several `oma` processes, one per OMA VM in CloudStack, over one
// MariaDB (Galera) database; each registers itself here with what the others need to
// know of it (its CloudStack VM, NBD and SSH endpoints, API URL, capacity) and holds a
// lease it renews (nodes/node_lease.h does both). A single-node install has no node
// id and never touches this table.
//
// Leases are judged by the database's clock only: every lease time is computed and
// compared in SQL (Database::now_ms_sql), so nodes agree on who is alive whatever their
// own clocks say. A lease is held by one incarnation of a node: registration takes a
// node whose lease expired (or was released), or a new node id, and gives it the next
// incarnation; renew() and release() name the incarnation and do nothing for another.
// So a process that lost its lease (too slow to renew, cut off from the database) learns
// it at its next renewal and can never extend a lease registered after it.
//
// The operator's state (active, draining) is the node's, kept across registrations.
//
// Does not own the Database. Thread-safe: each method is one statement or one
// transaction on the thread-safe Database.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/enum_names.h"
#include "oma/db/database.h"

namespace mk::oma {

// What an operator decided for a node: active takes new VMs; draining takes none (its
// VMs move to other nodes at their next pass).
enum class NodeState { Active, Draining };
const EnumTable<NodeState>& enum_table(NodeState);

// A node's lease as the database's clock judges it now: alive (held, not expired),
// expired (its holder stopped renewing: the process or its VM died, or lost the
// database) or released (its holder stopped cleanly).
enum class LeaseState { Alive, Expired, Released };
const EnumTable<LeaseState>& enum_table(LeaseState);

// One node as it registers itself. Times in ms since the Unix epoch on the database's
// clock; the lease fields are the repository's (register_node sets them).
struct NodeRecord {
  std::string node_id;           // [a-z0-9][a-z0-9._-]{0,63}, chosen by the operator
  std::string cloudstack_vm_id;  // the OMA's own VM in CloudStack; "" with local volumes
  std::string nbd_host;          // where VMAs reach this node's export server
  int64_t nbd_port = 0;
  std::string ssh_host;          // where VMAs open their SSH tunnel to this node
  int64_t ssh_port = 22;
  std::string ssh_host_key;      // its sshd's public host key, which VMAs pin ("" = unknown)
  std::string tunnel_address = "127.0.0.1";  // where its sshd takes VMAs' reverse forwards
  std::string api_url;           // this node's API ("" until it listens)
  int64_t volume_slots = 0;      // data volumes this node's VM may hold
  int64_t disk_bytes = 0;        // replica space it may hold; 0: not limited by space
  NodeState state = NodeState::Active;
  int64_t incarnation = 0;
  int64_t lease_expires_at = 0;
  int64_t registered_at = 0;
  int64_t renewed_at = 0;
  std::optional<int64_t> released_at;
};

// A node and its lease as of `NodeList::database_now`.
struct NodeView {
  NodeRecord node;
  LeaseState lease = LeaseState::Expired;
};

struct NodeList {
  int64_t database_now = 0;  // the database's clock when the list was read
  std::vector<NodeView> nodes;  // by node id
};

// A lease as its holder knows it.
struct NodeLeaseGrant {
  std::string node_id;
  int64_t incarnation = 0;
  int64_t expires_at = 0;  // database clock
};

class NodeRepository {
 public:
  explicit NodeRepository(db::Database& db) : db_(db) {}

  // Registers `self` (its endpoints and capacity; state and lease fields ignored) and
  // takes its lease for `lease_ms` from the database's now, with the next incarnation.
  // Returns nullopt, changing nothing, while another incarnation's lease is alive.
  // Throws UsageError for an invalid node id.
  std::optional<NodeLeaseGrant> register_node(const NodeRecord& self, int64_t lease_ms);
  // Extends a lease to the database's now + lease_ms. Returns the new expiry, or nullopt
  // when the lease is no longer this incarnation's or has expired (it is lost: register
  // again, which succeeds only while nobody else took the node id).
  std::optional<int64_t> renew(const std::string& node_id, int64_t incarnation, int64_t lease_ms);
  // Ends a lease now (clean shutdown): the node reads as released. Returns false when
  // the lease was not this incarnation's (nothing changed).
  bool release(const std::string& node_id, int64_t incarnation);
  // Records the node's API URL once it listens (the lease holder only).
  void set_api_url(const std::string& node_id, int64_t incarnation, const std::string& url);

  // Every node with its lease judged at the database's now.
  NodeList list_nodes();
  std::optional<NodeView> find_node(const std::string& node_id);
  // An operator's drain (Draining) or undrain (Active). Throws NotFound.
  NodeRecord set_state(const std::string& node_id, NodeState state);
  // The database's clock now (ms since the epoch).
  int64_t database_now();

 private:
  db::Database& db_;
};

// Whether `id` is a valid node id ([a-z0-9][a-z0-9._-]{0,63}).
bool valid_node_id(const std::string& id);

}  // namespace mk::oma
