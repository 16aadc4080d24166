// Shared pieces of the tests of a VMA paired with a service of several OMA nodes
// (service_nodes_test.cpp, service_nodes_nbd_test.cpp; issue 18, item 4): one real
// MariaDB, and per node a real OpenSSH sshd and a real `oma` process (local volumes)
// taking the VMA's reverse forward on its own loopback address; pairing a VMA with the
// service through `vma pair`; the VMA's tunnels as the nodes see them.
//
// Several nodes share this machine, so each takes the VMA's reverse forward on its own
// loopback address (--tunnel-address 127.0.0.N, sshd GatewayPorts clientspecified):
// the VMA's one tunnel port is the same on every node, as on separate machines.
//
// Header-only test support. The Service owns every process it starts (stopped by PID
// when destroyed). Not thread-safe.
#pragma once

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/subprocess.h"
#include "mariadb_server.h"
#include "oma_process.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/net.h"
#include "support/sshd_server.h"
#include "support/temp_dir.h"
#include "support/eventually.h"

namespace mk::oma::test {

using mk::test::eventually;
using mk::test::read_file_or_empty;

struct Node {
  std::string id, address, data, log, keys;
  std::unique_ptr<mk::test::SshdServer> sshd;
  std::optional<OmaProcess> process;
  std::unique_ptr<ApiClient> api;
};

struct Service {
  MariadbServer db_server;
  std::string url = db_server.create_database("oma_tunnels");
  mk::test::TempDir dir{"mk-service-nodes"};
  mk::test::PortBlock tunnel_ports{4};
  std::map<std::string, Node> nodes;
  std::string admin_from;  // the data directory whose admin token every node accepts

  // Starts node `id`: its sshd (with `sshd_extra` config lines after the node's own),
  // then its `oma` taking the VMA's reverse forward on `address`.
  Node& start(const std::string& id, const std::string& address, const std::vector<std::string>& sshd_extra = {}) {
    Node& n = nodes[id];
    n.id = id;
    n.address = address;
    n.data = dir.file(id);
    n.log = dir.file(id + ".log");
    n.keys = dir.file(id + "-authorized_keys");
    std::ofstream(n.keys).close();
    std::vector<std::string> extra{"Match all", "    GatewayPorts clientspecified"};
    for (const auto& l : sshd_extra) extra.push_back("    " + l);
    n.sshd = std::make_unique<mk::test::SshdServer>(mk::test::SshdOptions{.authorized_keys_file = n.keys, .extra = extra});
    std::filesystem::create_directories(n.data);
    if (!admin_from.empty()) {
      // Every node of a service shares the secrets key and the NBD key.
      for (const char* f : {"secrets.key", "nbd-psk.keys"})
        std::filesystem::copy_file(admin_from + "/" + f, n.data + "/" + f,
                                   std::filesystem::copy_options::overwrite_existing);
    }
    n.process.emplace(n.data, "http://127.0.0.1:1", n.log,
                      std::vector<std::string>{"--database", url, "--node-id", id, "--node-lease-ms", "3000",
                                               "--ssh-host", "127.0.0.1", "--ssh-port",
                                               std::to_string(n.sshd->port()), "--ssh-user", "root",
                                               "--ssh-host-key-file", n.sshd->host_public_key_file(),
                                               "--authorized-keys-file", n.keys, "--tunnel-port-base",
                                               std::to_string(tunnel_ports.first()), "--tunnel-address", address});
    if (admin_from.empty()) admin_from = n.data;
    n.api = std::make_unique<ApiClient>(n.process->port, read_admin_token(admin_from));
    return n;
  }
  // The VMA's health as `node` reaches it through its own tunnel (null if it does not).
  nlohmann::json vma_health(Node& n, const std::string& vma_id) {
    auto r = n.api->get("/api/v1/vmas/" + vma_id + "/health");
    return r.status == 200 ? r.body["vma"] : nlohmann::json(nullptr);
  }
};

// A pairing bundle made on node `n` (it names every live node of the service).
inline nlohmann::json pairing_bundle(Node& n) {
  auto r = n.api->post("/api/v1/vmas/pairing-bundles", "{}");
  if (r.status != 201) throw Error("pairing bundle from " + n.id + ": " + r.raw);
  return r.body;
}

// Pairs the VMA of state directory `state_dir` with `bundle` (`vma_bin pair`, vCenter
// name "vc-a"), approves it on node `approver` and waits until every node's sshd takes
// its key. Returns the VMA's id; throws mk::Error saying which step failed.
inline std::string pair_vma(Service& s, Node& approver, const nlohmann::json& bundle, const std::string& vma_bin,
                            const std::string& state_dir) {
  std::string bundle_file = state_dir + ".bundle.json";
  std::ofstream(bundle_file) << bundle.dump();
  std::string out;
  if (run_capture({vma_bin, "pair", "--bundle", bundle_file, "--state-dir", state_dir, "--name", "site-a",
                   "--vcenter", "vc-a"},
                  out) != 0)
    throw Error("vma pair failed:\n" + out);
  std::string id = nlohmann::json::parse(read_file_or_empty(state_dir + "/pairing.json"))["vma_id"];
  auto r = approver.api->post("/api/v1/vmas/" + id + "/approve", "");
  if (r.status != 200) throw Error("approving VMA " + id + " on " + approver.id + ": " + r.raw);
  // Approved on one node: every node's sshd takes the key (its own file, from the database).
  for (auto& [node_id, n] : s.nodes) {
    if (!eventually([&] { return read_file_or_empty(n.keys).find("vma-" + id) != std::string::npos; }, 30))
      throw Error(node_id + " never wrote the VMA approved on " + approver.id + " into its authorized_keys:\n" +
                  read_file_or_empty(n.keys));
  }
  return id;
}

// node id -> tunnel state, from a VMA health.
inline std::map<std::string, std::string> tunnels_of(const nlohmann::json& health) {
  std::map<std::string, std::string> out;
  if (!health.is_object()) return out;
  for (const auto& t : health["tunnels"]) out[t["node_id"].get<std::string>()] = t["tunnel"]["state"].get<std::string>();
  return out;
}

}  // namespace mk::oma::test
