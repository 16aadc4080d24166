#include "oma/db/node_repository.h"

#include <fmt/format.h>

#include "oma/db/table.h"
#include "oma/errors.h"

namespace mk::oma {

using db::column;
using db::Table;
using db::Value;

const EnumTable<NodeState>& enum_table(NodeState) {
  static const EnumTable<NodeState> t{"node state", {{NodeState::Active, "active"}, {NodeState::Draining, "draining"}}};
  return t;
}

const EnumTable<LeaseState>& enum_table(LeaseState) {
  static const EnumTable<LeaseState> t{
      "lease state", {{LeaseState::Alive, "alive"}, {LeaseState::Expired, "expired"}, {LeaseState::Released, "released"}}};
  return t;
}

namespace {

const Table<NodeRecord> kNodes{"oma_nodes", {column("node_id", &NodeRecord::node_id),
    column("cloudstack_vm_id", &NodeRecord::cloudstack_vm_id), column("nbd_host", &NodeRecord::nbd_host),
    column("nbd_port", &NodeRecord::nbd_port), column("ssh_host", &NodeRecord::ssh_host),
    column("ssh_port", &NodeRecord::ssh_port), column("ssh_host_key", &NodeRecord::ssh_host_key),
    column("tunnel_address", &NodeRecord::tunnel_address), column("api_url", &NodeRecord::api_url),
    column("volume_slots", &NodeRecord::volume_slots), column("disk_bytes", &NodeRecord::disk_bytes),
    column("state", &NodeRecord::state), column("incarnation", &NodeRecord::incarnation),
    column("lease_expires_at", &NodeRecord::lease_expires_at), column("registered_at", &NodeRecord::registered_at),
    column("renewed_at", &NodeRecord::renewed_at), column("released_at", &NodeRecord::released_at)}, 1};

NodeView judged(NodeRecord n, int64_t now) {
  LeaseState lease = n.lease_expires_at > now ? LeaseState::Alive
                     : n.released_at         ? LeaseState::Released
                                             : LeaseState::Expired;
  return {std::move(n), lease};
}

void check_node_id(const std::string& id) {
  if (!valid_node_id(id))
    throw UsageError(fmt::format("node id '{}': expected 1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter "
                                 "or digit",
                                 id.substr(0, 64)));
}

}  // namespace

bool valid_node_id(const std::string& id) {
  if (id.empty() || id.size() > 64) return false;
  if (id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") != std::string::npos) return false;
  return id[0] != '.' && id[0] != '_' && id[0] != '-';
}

std::optional<NodeLeaseGrant> NodeRepository::register_node(const NodeRecord& self, int64_t lease_ms) {
  check_node_id(self.node_id);
  const std::string now = db_.now_ms_sql();
  std::vector<Value> info{self.cloudstack_vm_id, self.nbd_host, self.nbd_port,     self.ssh_host,
                          self.ssh_port,         self.ssh_host_key, self.tunnel_address, self.api_url,
                          self.volume_slots,     self.disk_bytes};
  std::optional<NodeLeaseGrant> grant;
  db_.transaction([&] {
    grant.reset();  // run again after a conflict: start afresh
    // Take the node id over only when its lease has run out (or was released), by the
    // database's clock: the condition is the statement's, so two processes racing for
    // one id cannot both win.
    std::vector<Value> params = info;
    params.insert(params.end(), {lease_ms, self.node_id});
    int64_t taken = db_.exec(
        fmt::format("UPDATE oma_nodes SET cloudstack_vm_id = ?, nbd_host = ?, nbd_port = ?, ssh_host = ?, "
                    "ssh_port = ?, ssh_host_key = ?, tunnel_address = ?, api_url = ?, volume_slots = ?, disk_bytes = ?, incarnation = incarnation + 1, "
                    "lease_expires_at = {0} + ?, registered_at = {0}, renewed_at = {0}, released_at = NULL "
                    "WHERE node_id = ? AND lease_expires_at <= {0}",
                    now),
        params);
    if (taken == 0) {
      if (!db_.query("SELECT 1 FROM oma_nodes WHERE node_id = ?", {self.node_id}).empty()) return;  // alive
      params = {self.node_id};
      params.insert(params.end(), info.begin(), info.end());
      params.insert(params.end(), {enum_name(NodeState::Active), lease_ms});
      try {
        db_.exec(fmt::format("INSERT INTO oma_nodes (node_id, cloudstack_vm_id, nbd_host, nbd_port, ssh_host, "
                             "ssh_port, ssh_host_key, tunnel_address, api_url, volume_slots, disk_bytes, state, "
                             "incarnation, lease_expires_at, registered_at, renewed_at, released_at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, {0} + ?, {0}, {0}, NULL)",
                             now),
                 params);
      } catch (const db::ConstraintError&) {
        return;  // another process registered the same new id first: its lease is alive
      }
    }
    auto row = db_.query("SELECT incarnation, lease_expires_at FROM oma_nodes WHERE node_id = ?", {self.node_id});
    grant = NodeLeaseGrant{self.node_id, row.at(0).i64(0), row.at(0).i64(1)};
  });
  return grant;
}

std::optional<int64_t> NodeRepository::renew(const std::string& node_id, int64_t incarnation, int64_t lease_ms) {
  std::optional<int64_t> expires;
  db_.transaction([&] {
    expires.reset();
    const std::string now = db_.now_ms_sql();
    int64_t n = db_.exec(fmt::format("UPDATE oma_nodes SET lease_expires_at = {0} + ?, renewed_at = {0} "
                                     "WHERE node_id = ? AND incarnation = ? AND lease_expires_at > {0} "
                                     "AND released_at IS NULL",
                                     now),
                         {lease_ms, node_id, incarnation});
    if (n == 1)
      expires = db_.query("SELECT lease_expires_at FROM oma_nodes WHERE node_id = ?", {node_id}).at(0).i64(0);
  });
  return expires;
}

bool NodeRepository::release(const std::string& node_id, int64_t incarnation) {
  const std::string now = db_.now_ms_sql();
  // An expired lease keeps its expiry: releasing it must not make it look younger.
  return db_.exec(fmt::format("UPDATE oma_nodes SET released_at = {0}, "
                              "lease_expires_at = CASE WHEN lease_expires_at > {0} THEN {0} ELSE lease_expires_at END "
                              "WHERE node_id = ? AND incarnation = ? AND released_at IS NULL",
                              now),
                  {node_id, incarnation}) == 1;
}

void NodeRepository::set_api_url(const std::string& node_id, int64_t incarnation, const std::string& url) {
  db_.exec("UPDATE oma_nodes SET api_url = ? WHERE node_id = ? AND incarnation = ?", {url, node_id, incarnation});
}

NodeList NodeRepository::list_nodes() {
  NodeList out;
  db_.transaction([&] {
    out = {};
    out.database_now = database_now();
    for (auto& n : kNodes.query(db_, "ORDER BY node_id")) out.nodes.push_back(judged(std::move(n), out.database_now));
  });
  return out;
}

std::optional<NodeView> NodeRepository::find_node(const std::string& node_id) {
  std::optional<NodeView> out;
  db_.transaction([&] {
    out.reset();
    int64_t now = database_now();
    if (auto n = kNodes.query_one(db_, "WHERE node_id = ?", {node_id})) out = judged(std::move(*n), now);
  });
  return out;
}

NodeRecord NodeRepository::set_state(const std::string& node_id, NodeState state) {
  NodeRecord out;
  db_.transaction([&] {
    if (db_.exec("UPDATE oma_nodes SET state = ? WHERE node_id = ?", {enum_name(state), node_id}) != 1)
      throw NotFound(fmt::format("no OMA node '{}' (GET /api/v1/nodes lists them)", node_id.substr(0, 64)));
    out = kNodes.query_written(db_, "WHERE node_id = ?", {node_id}, "OMA node " + node_id);
  });
  return out;
}

int64_t NodeRepository::database_now() { return db_.query("SELECT " + db_.now_ms_sql()).at(0).i64(0); }

}  // namespace mk::oma
