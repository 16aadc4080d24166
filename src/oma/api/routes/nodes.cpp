// The OMA nodes over one database (issue 18), their leases and the VMs' placements:
// GET /api/v1/nodes, POST /api/v1/nodes/{node_id}/drain|activate,
// GET|POST /api/v1/vms/{vm_id}/placement, POST /api/v1/vms/{vm_id}/move.
#include <fmt/format.h>

#include <limits>
#include <tuple>

#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Tag kNodesTag{"Nodes", "The OMA nodes sharing this OMA's database, their leases, and which node holds each VM's "
                        "volumes"};

constexpr const char* kNodeIdPattern = "^[a-z0-9][a-z0-9._-]{0,63}$";

Field node_id_field(std::string name, std::string description) {
  return {.name = std::move(name), .description = std::move(description), .max_length = 64,
          .check = [](const std::string& v, const std::string& path) {
            if (!valid_node_id(v)) throw FieldError(path, "expected a node id: 1 to 64 of a-z, 0-9, '.', '_', '-'");
          },
          .example = "oma-1", .pattern = kNodeIdPattern};
}

const Schema kNode{{
    node_id_field("node_id", "the node's id (oma --node-id)"),
    text_field("cloudstack_vm_id", "the node's own VM in CloudStack (empty with local volumes)",
               "6d3c1f0e-2a4b-4c5d-8e9f-0a1b2c3d4e5f"),
    text_field("nbd_host", "where VMAs reach the node's NBD export server", "10.0.0.11"),
    int_field("nbd_port", "its port", 10809),
    text_field("ssh_host", "where VMAs open their SSH tunnel to the node", "10.0.0.11"),
    int_field("ssh_port", "its port", 22),
    {.name = "api_url", .description = "the node's API (empty until it listens)", .max_length = 1024,
     .example = "https://10.0.0.11:8082"},
    enum_field("state", "the operator's: active takes new VMs, draining takes none", kNodeStates),
    enum_field("lease", "its lease by the database's clock: alive, expired (the node stopped renewing it: it died "
                        "or lost the database) or released (it stopped cleanly)",
               kLeaseStates),
    int_field("lease_expires_in_ms", "how long its lease has left by the database's clock (negative: expired that "
                                     "long ago)",
              12000, std::numeric_limits<int64_t>::min()),
    int_field("incarnation", "how many times the node registered (grows at each start)", 3),
    int_field("volume_slots", "data volumes the node's VM may hold", 32),
    int_field("slots_used", "data-volume slots its VMs take (and VMs moving to it reserve)", 12),
    int_field("disk_bytes", "replica space it may hold (0: not limited by space)", 21990232555520),
    int_field("bytes_used", "its VMs' disks' bytes", 1099511627776),
    int_field("vms", "VMs placed on it", 6),
}, "Node", "an OMA node, its lease and its capacity"};

const Schema kTakeover{{
    enum_field("kind", "failover: its node died (lease expired); move: it moved between live nodes at its next pass "
                       "(its node drained, or an operator's move)",
               kTakeoverKinds),
    node_id_field("from_node", "the node it left (failover: the dead node whose lease expired)"),
    node_id_field("to_node", "the node that took the VM (and its pass) over"),
    enum_field("step", "the last step done: claimed (placement moved; failover: running pass failed), detached (from "
                       "the old node's VM), attached (to the new node's VM), exported (exports recreated, pass "
                       "started again or handed over: done)",
               kTakeoverSteps),
    text_field("reason", "why, in words", "OMA node oma-1 stopped renewing its lease (incarnation 3, expired 812 ms "
                                          "before by the database's clock: ...); node oma-2 took VM ... over"),
    nullable(uuid_field("failed_job_id", "the pass the takeover failed")),
    nullable(text_field("error", "the last step's failure (tried again every round)",
                        "takeover of VM ... stopped at step 'claimed': ...")),
    time_field("claimed_at", "when it was claimed (the database's clock)"),
    nullable(time_field("finished_at", "when its last step was done (the database's clock)")),
}, "Takeover", "the latest takeover of a VM from a dead node (failover), or move between nodes, step by step"};

const Schema kPlacement{{
    uuid_field("vm_id", "the VM"),
    nullable(node_id_field("node_id", "the node that holds the VM's volumes (null: waiting in the queue)")),
    int_field("slots", "data-volume slots the VM takes or needs (one per disk)", 2),
    int_field("disk_bytes", "its disks' bytes", 34359738368),
    enum_field("waiting_limit", "why it waits: none (placed), no_active_node, volume_slots, disk_space",
               kPlacementLimits),
    nullable(text_field("waiting_reason", "why it waits, in words",
                        "needs 2 data-volume slots (32.0 GiB); the most free on any active node is 1 (node oma-1)")),
    nullable(node_id_field("requested_node_id", "the node an operator moves it to, at its next pass")),
    time_field("queued_at", "when it was first placed or queued (the database's clock)"),
    nullable(time_field("placed_at", "when it was placed (the database's clock)")),
    nullable(object_field("takeover", "its latest takeover from a dead node or move between nodes (GET of "
                                      "one VM's placement only; null: none, or in lists)",
                          &kTakeover)),
}, "Placement", "which OMA node holds a VM's volumes, or why it waits"};

const Schema kNodeList{{
    nullable(node_id_field("this_node", "the node that answered (null: a single OMA without a node id)")),
    time_field("database_time", "the database's clock, by which leases are judged"),
    array_field("nodes", "every node, by id", &kNode),
    array_field("queue", "VMs waiting for a node, in order", &kPlacement),
}, "NodeList", "the OMA nodes and the placement queue"};

const Schema kMove{{
    node_id_field("node_id", "the node to move the VM to"),
}, "MoveRequest", "an operator's move of a VM to another node"};

json placement_json(const PlacementRecord& p, const std::optional<TakeoverRecord>& t = std::nullopt) {
  auto opt = [](const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); };
  json takeover = nullptr;
  if (t) {
    takeover = {{"kind", t->kind},               {"from_node", t->from_node},     {"to_node", t->to_node},
                {"step", t->step},               {"reason", t->reason},
                {"failed_job_id", opt(t->failed_job_id)}, {"error", opt(t->error)},
                {"claimed_at", t->claimed_at},
                {"finished_at", t->finished_at ? json(*t->finished_at) : json(nullptr)}};
  }
  return {{"vm_id", p.vm_id},
          {"takeover", takeover},
          {"node_id", opt(p.node_id)},
          {"slots", p.slots},
          {"disk_bytes", p.disk_bytes},
          {"waiting_limit", p.limit},
          {"waiting_reason", opt(p.waiting_reason)},
          {"requested_node_id", opt(p.requested_node_id)},
          {"queued_at", p.queued_at},
          {"placed_at", p.placed_at ? json(*p.placed_at) : json(nullptr)}};
}

json node_json(const NodeView& v, int64_t now, const std::vector<NodeCapacity>& use) {
  const NodeRecord& n = v.node;
  json j = {{"node_id", n.node_id},           {"cloudstack_vm_id", n.cloudstack_vm_id},
            {"nbd_host", n.nbd_host},         {"nbd_port", n.nbd_port},
            {"ssh_host", n.ssh_host},         {"ssh_port", n.ssh_port},
            {"api_url", n.api_url},           {"state", n.state},
            {"lease", v.lease},               {"lease_expires_in_ms", n.lease_expires_at - now},
            {"incarnation", n.incarnation},   {"volume_slots", n.volume_slots},
            {"slots_used", 0},                {"disk_bytes", n.disk_bytes},
            {"bytes_used", 0},                {"vms", 0}};
  for (const auto& c : use) {
    if (c.node_id != n.node_id) continue;
    j["slots_used"] = c.slots_used;
    j["bytes_used"] = c.bytes_used;
    j["vms"] = c.vms;
  }
  return j;
}

Field node_param() { return node_id_field("node_id", "the node"); }

}  // namespace

std::vector<Route> node_routes(const Services& s) {
  NodeRepository& nodes = s.repos.nodes;
  PlacementRepository& placements = s.repos.placements;
  std::string this_node = s.node_id;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/nodes",
      .operation_id = "listNodes",
      .tag = &kNodesTag,
      .summary = "List the OMA nodes, their leases and the placement queue",
      .description = "Every OMA node registered in this database with its lease as the database's clock judges it "
                     "now, its capacity and use, and the VMs waiting for a node. A single OMA without --node-id "
                     "lists none.",
      .role = "viewer",
      .responses = {{200, "the nodes and the queue", &kNodeList}},
      .handler = [&nodes, &placements, this_node](const Request&, const json&, const Caller&) -> Reply {
                 NodeList list = nodes.list_nodes();
                 auto use = placements.capacities();
                 json out = {{"this_node", this_node.empty() ? json(nullptr) : json(this_node)},
                             {"database_time", list.database_now},
                             {"nodes", json::array()},
                             {"queue", json::array()}};
                 for (const auto& v : list.nodes) out["nodes"].push_back(node_json(v, list.database_now, use));
                 for (const auto& p : placements.list()) {
                   if (!p.node_id) out["queue"].push_back(placement_json(p));
                 }
                 return {200, out, ""};
               }});
  for (auto [verb, state, summary] :
       {std::tuple{"drain", NodeState::Draining,
                   "Drain a node: it takes no new VMs (its VMs move to other nodes at their next pass)"},
        std::tuple{"activate", NodeState::Active, "Let a drained node take new VMs again"}}) {
    NodeState to = state;
    routes.push_back({
        .method = "POST",
        .path = fmt::format("/api/v1/nodes/{{node_id}}/{}", verb),
        .operation_id = verb == std::string("drain") ? "drainNode" : "activateNode",
        .tag = &kNodesTag,
        .summary = summary,
        .description = "Sets the node's state (kept across its restarts) and answers with the node.",
        .role = "admin",
        .params = {node_param()},
        .responses = {{200, "the node", &kNode}, {404, "no such node"}},
        .handler = [&nodes, &placements, to](const Request& req, const json&, const Caller&) -> Reply {
                   nodes.set_state(req.param("node_id"), to);
                   if (to == NodeState::Active) placements.place_waiting();
                   NodeList list = nodes.list_nodes();
                   auto use = placements.capacities();
                   for (const auto& v : list.nodes) {
                     if (v.node.node_id == req.param("node_id")) return {200, node_json(v, list.database_now, use), ""};
                   }
                   throw NotFound(fmt::format("no OMA node '{}'", req.param("node_id")));
                 }});
  }
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}/placement",
      .operation_id = "getPlacement",
      .tag = &kNodesTag,
      .summary = "Which node holds a VM's volumes, or why it waits",
      .description = "The VM's placement: its node, or its place in the queue with the limit that keeps it waiting "
                     "and how many slots it needs; and its latest takeover from a dead node, step by step.",
      .role = "viewer",
      .params = {uuid_path_param("vm_id", "the VM")},
      .responses = {{200, "the placement", &kPlacement}, {404, "the VM has no placement"}},
      .handler = [&placements, &takeovers = s.repos.takeovers](const Request& req, const json&, const Caller&) -> Reply {
                 return {200, placement_json(found(placements.find(req.param("vm_id")),
                                                   fmt::format("VM {} is not placed on a node (POST its placement)",
                                                               req.param("vm_id"))),
                                             takeovers.find(req.param("vm_id"))),
                         ""};
               }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/placement",
      .operation_id = "placeVm",
      .tag = &kNodesTag,
      .summary = "Place a VM's volumes on the least loaded node that can take them, or queue it",
      .description = "All of a VM's volumes go to one node: the least loaded alive, active node with a free "
                     "data-volume slot per disk (and the space). A VM that fits nowhere waits in the queue, saying "
                     "which limit and how many slots it needs, and is placed when slots free up. A placed VM keeps "
                     "its node.",
      .role = "operator",
      .params = {uuid_path_param("vm_id", "the VM")},
      .responses = {{200, "the placement (placed, or waiting)", &kPlacement}, {404, "no such VM"}},
      .handler = [&placements](const Request& req, const json&, const Caller&) -> Reply {
                 return {200, placement_json(placements.place_vm(req.param("vm_id"))), ""};
               }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/move",
      .operation_id = "moveVm",
      .tag = &kNodesTag,
      .summary = "Move a VM to another node at its next pass",
      .description = "Records an operator's move of a placed VM to a node that can take it (alive, active, with the "
                     "free slots; they are reserved there). Moving it to the node it is on cancels a move.",
      .role = "admin",
      .params = {uuid_path_param("vm_id", "the VM")},
      .body = &kMove,
      .responses = {{200, "the placement with the move", &kPlacement},
                    {404, "the VM is not placed, or no such node"},
                    {409, "the node cannot take the VM (why)"}},
      .handler = [&placements](const Request& req, const json& b, const Caller&) -> Reply {
                 return {200, placement_json(placements.request_move(req.param("vm_id"), b["node_id"].get<std::string>())), ""};
               }});
  return routes;
}

}  // namespace mk::oma::api
