// Shared pieces of the tests that run several real `oma` processes as nodes of one
// service over one database (failover_test.cpp, scale_test.cpp; issue 18): a node
// (its data directory, log, CloudStack VM and by-id directory, its process and API
// client), the keys every node of a service shares, polling without timed assertions,
// and where the CloudStack simulator has a VM's volumes attached.
//
// Header-only test support. Not thread-safe.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "cloudstack/volumes.h"
#include "oma_process.h"
#include "oma_service.h"
#include "sim_server.h"
#include "support/eventually.h"

namespace mk::oma::test {

using Clock = std::chrono::steady_clock;

inline int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

using mk::test::eventually;

// A job's events, one message a line.
inline std::string events_text(const nlohmann::json& job) {
  std::string out;
  for (const auto& e : job["events"]) out += e["message"].get<std::string>() + "\n";
  return out;
}

// One OMA node: the "cloudstack" volume backend on the simulator's OMA VM
// `cloudstack_vm` (its volumes appear in `by_id`), database `url`, `slots` data-volume
// slots, a lease of `lease_ms`.
struct OmaNode {
  std::string id, data, log, by_id, cloudstack_vm, url, vma_url;
  int slots = 4;
  int lease_ms = 3000;
  std::optional<OmaProcess> process;
  std::unique_ptr<ApiClient> api;

  // Starts (or restarts) the process; its API client uses the admin token of the node
  // whose data directory is `token_from` (the first node's: every node shares it).
  void start(const std::string& token_from) {
    process.emplace(data, vma_url, log,
                    std::vector<std::string>{"--database", url, "--node-id", id, "--node-volume-slots",
                                             std::to_string(slots), "--node-lease-ms", std::to_string(lease_ms),
                                             "--node-cloudstack-vm-id", cloudstack_vm, "--volume-backend",
                                             "cloudstack", "--by-id-dir", by_id, "--cloudstack-allow-http",
                                             "--device-timeout", "10"});
    api = std::make_unique<ApiClient>(process->port, read_admin_token(token_from));
  }
  // The export symlinks this node's export server serves.
  bool serves(const std::string& export_name) const {
    std::error_code ec;
    return std::filesystem::is_symlink(data + "/exports/" + export_name, ec);
  }
};

// Every node of a service shares the secrets key and the NBD key (the VMA's): copied
// from the first node's data directory into another's before it starts.
inline void share_service_keys(const std::string& from_data, const std::string& to_data) {
  std::filesystem::create_directories(to_data);
  for (const char* f : {"secrets.key", "nbd-psk.keys"})
    std::filesystem::copy_file(from_data + "/" + f, to_data + "/" + f,
                               std::filesystem::copy_options::overwrite_existing);
}

// The CloudStack VM a volume of the simulator's state is attached to, "" if none (a
// detached volume has no "virtualmachineid": operator[] on a const json must not be used
// for a key that may be missing).
inline std::string attached_vm_of(const nlohmann::json& volume) {
  auto it = volume.find("virtualmachineid");
  return it != volume.end() && it->is_string() ? it->get<std::string>() : "";
}

// The simulator's volumes of VM `vm` (by our VM tag): volume id -> the CloudStack VM it
// is attached to ("" if none).
inline std::map<std::string, std::string> volume_attachments(mk::cloudstack::test::SimServer& sim,
                                                             const std::string& vm) {
  std::map<std::string, std::string> out;
  const nlohmann::json st = sim.state();
  for (const auto& v : st["volumes"]) {
    for (const auto& t : v["tags"]) {
      if (t["key"] == mk::cloudstack::kTagVm && t["value"] == vm)
        out[v["id"].get<std::string>()] = attached_vm_of(v);
    }
  }
  return out;
}

}  // namespace mk::oma::test
