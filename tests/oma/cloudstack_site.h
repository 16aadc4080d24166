// Test helpers for the OMA with the "cloudstack" volume backend as a real process: the
// CloudStack simulator, the fake VMA, the `oma` binary killed (SIGKILL) and started again
// on one data directory, its stopped database opened for seeding, and checks of the VM's
// volumes and exports as the OMA and CloudStack see them. Used by the recovery and
// grown-disk tests.
//
// A Site owns everything it starts (stopped by PID on destruction). Not thread-safe.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cloudstack/volumes.h"
#include "fake_vma.h"
#include "oma/db/repositories.h"
#include "oma/db/sqlite_database.h"
#include "oma_process.h"
#include "oma_service.h"
#include "sim_server.h"
#include "support/files.h"
#include "support/net.h"

namespace mk::oma::test {

using nlohmann::json;
namespace sim_seed = mk::cloudstack::test::seed;

inline constexpr int64_t kCapacity = 1048576;
inline const std::vector<std::string> kDiskKeys = {"2000", "2001"};

// The database of a stopped OMA, for seeding what a crash leaves.
struct Db {
  explicit Db(const std::string& data) : database(data + "/oma.db") {}
  db::SqliteDatabase database;
  Repositories repos{database};
};

// One site: simulator, fake VMA, the OMA's data directory, and the OMA when it runs.
struct Site {
  mk::test::TempDir dir{"mk-oma-restart"};
  mk::cloudstack::test::SimServer sim;
  std::string data = dir.file("data");
  // The OMA's own NBD key (it uses one it finds): the fake writes what it reports.
  FakeVma vma{(std::filesystem::create_directories(data), mk::test::make_psk_file(data + "/nbd-psk.keys", "oma"))};
  std::unique_ptr<OmaProcess> oma;
  std::unique_ptr<ApiClient> api;
  std::string vm = test_vm_uuid(1);
  int runs = 0;

  std::string log() const { return dir.file(fmt::format("oma{}.log", runs)); }
  void start() {
    ++runs;
    oma = std::make_unique<OmaProcess>(
        data, vma.url(), log(),
        std::vector<std::string>{"--volume-backend", "cloudstack", "--by-id-dir", sim.by_id_dir(),
                                 "--cloudstack-allow-http", "--device-timeout", "10"});
    api = std::make_unique<ApiClient>(oma->port, read_admin_token(data));
    vma.serve_exports_on(api->get("/health").body["nbd_port"].get<int>());  // --nbd-port 0: new at each start
  }
  // SIGKILL; returns once its export server died with it (PR_SET_PDEATHSIG).
  void crash() {
    pid_t nbdkit = api->get("/health").body["export_server_pid"];
    oma->process.signal(SIGKILL);
    oma->process.wait();
    for (int i = 0; i < 1000 && ::kill(nbdkit, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_NE(::kill(nbdkit, 0), 0) << "the export server outlived the killed OMA";
    api.reset();
    oma.reset();
  }

  // CloudStack settings and network mappings, then the VM (known to the fake VMA, on).
  void prepare_site() {
    start();
    auto r = api->put("/api/v1/settings/cloudstack", sim.oma_settings().dump());
    ASSERT_EQ(r.status, 200) << r.raw;
    json mappings = {{"mappings", {{{"source_network", "VM Network"}, {"target_network_id", sim_seed::prod_network},
                                    {"keep_mac", true}}}}};
    r = api->put("/api/v1/network-mappings", mappings.dump());
    ASSERT_EQ(r.status, 200) << r.raw;
    json body = vm_body(vm, static_cast<int>(kDiskKeys.size()), kCapacity);
    body["name"] = "web01";
    body["nics"] = {{{"mac", "00:50:56:aa:bb:01"}, {"network", "VM Network"}}};
    r = api->post("/api/v1/vms", body.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    vma.add_source_vm(vm, "web01", true);
  }

  std::string post_job(const std::string& path, const json& body) {
    auto r = api->post(path, body.dump());
    EXPECT_TRUE(r.status == 201 || r.status == 202) << path << ": " << r.raw;
    return r.body.value("job_id", "");
  }
  json job(const std::string& id) { return api->get("/api/v1/jobs/" + id).body; }
  json wait_status(const std::string& id, const std::string& status) {
    return wait_for_job(*api, id, [&](const json& j) { return j["status"] == status; });
  }
  json vm_json() { return api->get("/api/v1/vms/" + vm).body; }
  std::map<std::string, std::string> volume_ids() {
    std::map<std::string, std::string> out;
    const json disks = api->get("/api/v1/vms/" + vm + "/disks").body;  // kept: the loop must not run over a temporary
    for (const auto& d : disks["disks"]) {
      if (!d["volume_id"].is_null()) out[d["key"].get<std::string>()] = d["volume_id"].get<std::string>();
    }
    return out;
  }
  // The VM's volumes in CloudStack (by our VM tag), by id.
  std::map<std::string, json> cloud_volumes() {
    std::map<std::string, json> out;
    const json st = sim.state();
    for (const auto& v : st["volumes"]) {
      for (const auto& t : v["tags"]) {
        if (t["key"] == mk::cloudstack::kTagVm && t["value"] == vm) out[v["id"].get<std::string>()] = v;
      }
    }
    return out;
  }
  int cloud_vms_named(const std::string& name) {
    int n = 0;
    const json st = sim.state();
    for (const auto& v : st["virtualmachines"]) n += v["name"] == name;
    return n;
  }
};

inline std::string events_of(const json& job) {
  std::string out;
  for (const auto& e : job["events"]) out += e["message"].get<std::string>() + "\n";
  return out;
}

// The VM's volumes as the OMA and CloudStack see them: `n` volumes, each recorded for its
// disk, attached to the OMA's VM at its own device, exported once at its by-id link;
// nothing in CloudStack that the OMA has not recorded.
inline void expect_volumes_and_exports(Site& s, size_t n) {
  auto recorded = s.volume_ids();
  auto cloud = s.cloud_volumes();
  EXPECT_EQ(recorded.size(), n);
  EXPECT_EQ(cloud.size(), n) << "a CloudStack volume of the VM that the OMA has not recorded (leaked), or one missing";
  std::set<int> devices;
  for (const auto& [key, id] : recorded) {
    SCOPED_TRACE("disk " + key);
    ASSERT_TRUE(cloud.count(id)) << "volume " << id << " is recorded but not in CloudStack";
    EXPECT_EQ(cloud[id]["virtualmachineid"], s.sim.oma_vm_id());
    EXPECT_TRUE(devices.insert(cloud[id]["deviceid"].get<int>()).second) << "two volumes at one device";
  }
  std::map<std::string, int> per_volume;
  const json exports = s.api->get("/api/v1/exports").body;
  for (const auto& e : exports["exports"]) {
    std::string id = e["volume_id"];
    per_volume[id]++;
    EXPECT_EQ(e["device_path"], s.sim.by_id_dir() + "/" + mk::cloudstack::CloudStackVolumes::device_link_name(id));
  }
  EXPECT_EQ(per_volume.size(), n);
  for (const auto& [key, id] : recorded) EXPECT_EQ(per_volume[id], 1) << "disk " << key << " volume " << id;
}

// Every disk of an ended job is in an end state; one that did not finish says why.
inline void expect_disks_ended(const json& job) {
  for (const auto& d : job["disks"]) {
    std::string status = d["status"];
    EXPECT_TRUE(status == "completed" || status == "failed") << d.dump();
    if (status == "failed") {
      ASSERT_TRUE(d["error"].is_string()) << d.dump();
      EXPECT_FALSE(d["error"].get<std::string>().empty()) << d.dump();
      EXPECT_EQ(d["phase"], "failed") << d.dump();
    }
  }
}

}  // namespace mk::oma::test
