// The OMA with the "cloudstack" volume backend against the CloudStack simulator, end to
// end through its REST API: an in-process OMA, its real nbdkit export server, the
// strict fake VMA running real `migratekit copy` processes from nbdkit sources.
//
//  * replication: one CloudStack volume per disk, tagged as ours, attached to the OMA's
//    VM; exports point at the by-id links; the source data lands in the volumes;
//  * cutover: the VM built in CloudStack with the OS disk as its root and the data
//    disks in unit order, the source shut down through the VMA, every step persisted;
//  * a failure injected at each cutover step: the job fails naming the step and
//    CloudStack's error, and the OMA (volumes attached and exported, the export server
//    not restarted) and the source (powered on) are as they were; replication goes on;
//  * test failover and its cleanup; the "local" backend's cutover.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "common/units.h"
#include "fake_vma.h"
#include "oma/db/sqlite_database.h"
#include "oma_service.h"
#include "sim_server.h"
#include "support/files.h"
#include "support/nbdkit_server.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::ApiClient;
namespace sim_seed = mk::cloudstack::test::seed;
using mk::cloudstack::CloudStackVolumes;

struct DiskSpec {
  std::string key;
  int unit;
  int64_t capacity;
};
// Listed out of unit order on purpose: order must come from the unit numbers.
const std::vector<DiskSpec> kDisks = {{"2002", 2, 2 * MiB}, {"2000", 0, 3 * MiB}, {"2001", 1, 1 * MiB}};

class OmaFlow : public ::testing::Test {
 protected:
  explicit OmaFlow(mk::cloudstack::test::SimOptions options = {}) : sim(std::move(options)) {}
  void SetUp() override { start("cloudstack"); }

  void start(const std::string& backend) {
    std::filesystem::create_directories(dir.file("data"));
    vma = std::make_unique<test::FakeVma>(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
    OmaConfig c = test::test_config(dir.file("data"), vma->url());
    c.volume_backend = backend;
    c.cloudstack.by_id_dir = sim.by_id_dir();
    c.cloudstack.device_timeout = std::chrono::seconds(10);
    c.cloudstack.client = mk::cloudstack::test::SimServer::fast_client_options();
    c.cutover.power_poll = std::chrono::milliseconds(5);
    c.volume_slot_poll_ms = 20;
    if (tweak) tweak(c);
    oma = std::make_unique<Oma>(c);
    oma->start();
    api = std::make_unique<ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
    if (backend == "cloudstack") configure();
    add_vm();
    export_pid = api->get("/health").body["export_server_pid"];
  }

  void configure() {
    auto r = api->put("/api/v1/settings/cloudstack", sim.oma_settings().dump());
    ASSERT_EQ(r.status, 200) << r.raw;
    json mappings = {{"mappings",
                      {{{"source_network", "VM Network"}, {"target_network_id", sim_seed::prod_network},
                        {"keep_mac", true}},
                       {{"source_network", "Backup"}, {"target_network_id", sim_seed::nomac_network},
                        {"keep_mac", false}}}}};
    r = api->put("/api/v1/network-mappings", mappings.dump());
    ASSERT_EQ(r.status, 200) << r.raw;
  }

  void add_vm() {
    json disks = json::array();
    for (const auto& d : kDisks) {
      disks.push_back({{"key", d.key}, {"unit", d.unit}, {"capacity_bytes", d.capacity}});
      std::string image = dir.file("src-" + d.key + ".img");
      mk::test::create_sparse_file(image, d.capacity);
      mk::test::write_random_at(image, 0, 256 * KiB, std::stoi(d.key));
      mk::test::write_random_at(image, d.capacity - 64 * KiB, 64 * KiB, std::stoi(d.key) + 1);
      images[d.key] = image;
      sources.push_back(std::make_unique<mk::test::NbdkitServer>(mk::test::NbdkitOptions{.args = {"file=" + image}}));
      vma->set_source(d.key, sources.back()->uri());
    }
    json body = {{"vm_id", vm_id},   {"name", "web01"}, {"vcenter", "vcsim.test"}, {"datacenter", "DC0"},
                 {"cpus", vm_cpus},  {"memory_mb", 6144}, {"disks", disks},
                 {"nics", {{{"mac", "00:50:56:aa:bb:01"}, {"network", "VM Network"}},
                           {{"mac", "00:50:56:aa:bb:02"}, {"network", "Backup"}}}}};
    auto r = api->post("/api/v1/vms", body.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    vma->add_source_vm(vm_id, "web01", true);
  }

  // Another VM, known to the fake VMA, with disks of these keys and sizes (its copies
  // read the sources set for those keys).
  void add_other_vm(const std::string& id, const std::string& name, const std::vector<DiskSpec>& specs) {
    json disks = json::array();
    for (const auto& d : specs) disks.push_back({{"key", d.key}, {"unit", d.unit}, {"capacity_bytes", d.capacity}});
    json body = {{"vm_id", id}, {"name", name}, {"vcenter", "vcsim.test"}, {"datacenter", "DC0"}, {"cpus", 2},
                 {"memory_mb", 2048}, {"disks", disks}, {"nics", {{{"mac", "00:50:56:aa:cc:01"}, {"network", "VM Network"}}}}};
    auto r = api->post("/api/v1/vms", body.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    vma->add_source_vm(id, name, true);
  }
  json preflight_of(const std::string& id) {
    auto r = api->get("/api/v1/vms/" + id + "/preflight");
    EXPECT_EQ(r.status, 200) << r.raw;
    return r.body;
  }
  static std::set<std::string> codes(const json& findings) {
    std::set<std::string> out;
    for (const auto& f : findings) out.insert(f["code"].get<std::string>());
    return out;
  }

  json run_job(const std::string& path, const json& body = nullptr) {
    auto r = api->post(path, body.is_null() ? "" : body.dump());
    EXPECT_TRUE(r.status == 201 || r.status == 202) << path << ": " << r.raw;
    if (!r.body.is_object() || !r.body.contains("job_id")) return r.body;
    return test::wait_for_job(*api, r.body["job_id"], test::job_ended);
  }
  json replicate(const std::string& kind) {
    return run_job("/api/v1/jobs", {{"vm_id", vm_id}, {"kind", kind}});
  }

  std::map<std::string, std::string> volume_ids() {
    std::map<std::string, std::string> out;
    auto r = api->get("/api/v1/vms/" + vm_id + "/disks");
    EXPECT_EQ(r.status, 200) << r.raw;
    for (const auto& d : r.body["disks"]) {
      if (!d["volume_id"].is_null()) out[d["key"]] = d["volume_id"];
    }
    return out;
  }
  json sim_volume(const std::string& id) {
    const json st = sim.state();  // kept: the loop must not run over a temporary's member
    for (const auto& v : st["volumes"]) {
      if (v["id"] == id) return v;
    }
    return nullptr;
  }
  std::string link_of(const std::string& volume_id) {
    return sim.by_id_dir() + "/" + CloudStackVolumes::device_link_name(volume_id);
  }

  // Every disk's volume on the OMA, exported at its by-id link, holding the source's
  // data; the export server never restarted.
  void expect_on_oma() {
    auto ids = volume_ids();
    ASSERT_EQ(ids.size(), kDisks.size());
    std::map<std::string, std::string> export_device;
    const json exports = api->get("/api/v1/exports").body;
    for (const auto& e : exports["exports"]) export_device[e["volume_id"]] = e["device_path"];
    for (const auto& d : kDisks) {
      SCOPED_TRACE("disk " + d.key);
      const std::string& id = ids[d.key];
      json v = sim_volume(id);
      ASSERT_FALSE(v.is_null());
      EXPECT_EQ(v["virtualmachineid"], sim.oma_vm_id());
      EXPECT_TRUE(std::filesystem::exists(link_of(id)));
      EXPECT_EQ(export_device[id], link_of(id));
      EXPECT_EQ(mk::test::first_difference(images[d.key], link_of(id)), std::nullopt);
    }
    EXPECT_EQ(api->get("/health").body["export_server_pid"], export_pid) << "the export server was restarted";
  }

  std::vector<std::string> step_names(const json& job) {
    std::vector<std::string> out;
    for (const auto& s : job["steps"]) out.push_back(s["name"]);
    return out;
  }
  const json* step(const json& job, const std::string& name) {
    const json* found = nullptr;
    for (const auto& s : job["steps"]) if (s["name"] == name) found = &s;
    return found;
  }
  std::string vm_status() { return api->get("/api/v1/vms/" + vm_id).body["status"]; }

  void TearDown() override {
    if (vma) {
      EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
    }
  }

  mk::cloudstack::test::SimServer sim;
  mk::test::TempDir dir{"mk-cs-oma"};
  std::unique_ptr<test::FakeVma> vma;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<ApiClient> api;
  std::map<std::string, std::string> images;
  std::vector<std::unique_ptr<mk::test::NbdkitServer>> sources;
  const std::string vm_id = test::test_vm_uuid(0x51);
  int vm_cpus = 4;  // the custom service offering accepts 1 to 8
  int64_t export_pid = 0;
  std::function<void(OmaConfig&)> tweak;  // applied to the configuration before the OMA starts
};

TEST_F(OmaFlow, SettingsAreValidatedAndTheSecretNeverLeaves) {
  auto r = api->post("/api/v1/settings/cloudstack/validate", "");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["ok"], true) << r.raw;
  json got = api->get("/api/v1/settings/cloudstack").body;
  EXPECT_EQ(got["secret_key_set"], true);
  EXPECT_EQ(got.dump().find(sim.endpoint().secret_key), std::string::npos) << got.dump();
  EXPECT_EQ(got.dump().find(sim.endpoint().api_key), std::string::npos) << got.dump();
  auto rows = oma->repos().database.query("SELECT value FROM settings");
  for (const auto& row : rows) EXPECT_EQ(row.str(0).find(sim.endpoint().secret_key), std::string::npos);
  std::string listing = api->get("/api/v1/settings").raw;
  EXPECT_EQ(listing.find("secret_key_sealed"), std::string::npos) << listing;

  // Wrong ids are reported field by field, all at once.
  r = api->post("/api/v1/settings/cloudstack/validate",
                json{{"template_id", sim_seed::unready_template}, {"disk_offering_id", sim_seed::fixed_disk_offering},
                     {"test_network_id", "n0000000-0000-4000-8000-0000000000ff"}}
                    .dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["ok"], false);
  std::set<std::string> fields;
  for (const auto& p : r.body["problems"]) fields.insert(p["field"]);
  EXPECT_EQ(fields, (std::set<std::string>{"template_id", "disk_offering_id", "test_network_id"})) << r.raw;
  // Validation changed nothing that is stored.
  EXPECT_EQ(api->get("/api/v1/settings/cloudstack").body["template_id"], sim_seed::ready_template);
}

TEST_F(OmaFlow, ReplicationCopiesIntoTaggedVolumesAttachedToTheOma) {
  json job = replicate("full");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  expect_on_oma();
  auto ids = volume_ids();
  std::string oma_id = api->get("/api/v1/settings/cloudstack").body["oma_id"];
  for (const auto& d : kDisks) {
    json v = sim_volume(ids[d.key]);
    EXPECT_EQ(v["name"], "mk-" + vm_id + "-disk-" + d.key);
    EXPECT_EQ(v["size"], 1 * GiB);  // capacity rounded up to GiB
    std::map<std::string, std::string> tags;
    for (const auto& t : v["tags"]) tags[t["key"]] = t["value"];
    EXPECT_EQ(tags["migratekit-oma"], oma_id);
    EXPECT_EQ(tags["migratekit-vm"], vm_id);
    EXPECT_EQ(tags["migratekit-disk"], d.key);
  }
  // A second pass reuses the same volumes and exports; a volume someone detached from
  // the OMA in between is attached again (it is ours), never replaced.
  mk::cloudstack::Client cs(sim.endpoint(), mk::cloudstack::test::SimServer::fast_client_options());
  cs.call_async("detachVolume", {{"id", ids["2001"]}});
  ASSERT_FALSE(std::filesystem::exists(link_of(ids["2001"])));
  mk::test::write_random_at(images["2001"], 512 * KiB, 64 * KiB, 77);
  job = replicate("incremental");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(volume_ids(), ids);
  EXPECT_EQ(sim.state()["volumes"].size(), kDisks.size());
  expect_on_oma();
}

TEST_F(OmaFlow, CutoverBuildsTheVmWithTheOsDiskAsRootAndDataDisksInUnitOrder) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  // The source changes once more before the cutover: the final pass must carry it.
  mk::test::write_random_at(images["2002"], 1 * MiB, 128 * KiB, 5);
  auto ids = volume_ids();
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(job["kind"], "cutover");
  std::vector<std::string> names = step_names(job);
  for (const char* expected : {"final-pass", "detach-from-oma", "deploy-vm", "replace-root", "attach-data-disks",
                               "start-vm", "committing change IDs"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), expected), names.end()) << expected;
  }
  for (const auto& s : job["steps"]) EXPECT_EQ(s["status"], "completed") << s.dump();
  EXPECT_EQ(vm_status(), "cut_over");
  EXPECT_FALSE(vma->powered_on(vm_id));
  EXPECT_EQ(vma->power_calls(), (std::vector<std::string>{"shutdown " + vm_id, "cleanup " + vm_id}));

  json st = sim.state();
  ASSERT_EQ(st["virtualmachines"].size(), 2u);  // the OMA and the migrated VM
  json built;
  for (const auto& v : st["virtualmachines"]) if (v["id"] != sim.oma_vm_id()) built = v;
  EXPECT_EQ(built["name"], "web01");
  EXPECT_EQ(built["state"], "Running");
  EXPECT_EQ(built["cpunumber"], 4);
  EXPECT_EQ(built["memory"], 6144);
  ASSERT_EQ(built["nic"].size(), 2u);
  EXPECT_EQ(built["nic"][0]["networkid"], sim_seed::prod_network);
  EXPECT_EQ(built["nic"][0]["macaddress"], "00:50:56:aa:bb:01");
  EXPECT_EQ(built["nic"][1]["networkid"], sim_seed::nomac_network);
  EXPECT_EQ(st["volumes"].size(), kDisks.size()) << "the template's root volume was not deleted";
  std::map<std::string, int> device;
  for (const auto& d : kDisks) {
    json v = sim_volume(ids[d.key]);
    EXPECT_EQ(v["virtualmachineid"], built["id"]) << d.key;
    device[d.key] = v["deviceid"];
    EXPECT_FALSE(std::filesystem::exists(link_of(ids[d.key])));
    // The final pass copied the last change: the volume holds the source as it was at shutdown.
    EXPECT_EQ(mk::test::first_difference(images[d.key], sim.dir() + "/state/volumes/" + ids[d.key] + ".img"),
              std::nullopt)
        << d.key;
  }
  EXPECT_EQ(sim_volume(ids["2000"])["type"], "ROOT");
  EXPECT_EQ(device["2000"], 0);
  EXPECT_GT(device["2001"], 0);
  EXPECT_LT(device["2001"], device["2002"]);
  EXPECT_EQ(api->get("/api/v1/exports").body["exports"].size(), kDisks.size());  // recorded, not served
  json vm = api->get("/api/v1/vms/" + vm_id).body;
  ASSERT_EQ(vm["failovers"].size(), 1u) << vm.dump(2);
  EXPECT_EQ(vm["failovers"][0]["target_vm_id"], built["id"]);
  EXPECT_EQ(vm["failovers"][0]["job_id"], job["job_id"]);
  // A cut-over VM is not replicated again, nor cut over twice.
  EXPECT_EQ(api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", "incremental"}}.dump()).status, 409);
  EXPECT_EQ(api->post("/api/v1/vms/" + vm_id + "/cutover", "").status, 409);
}

TEST_F(OmaFlow, CutoverIsRefusedBeforeAnythingWhenANetworkIsUnmapped) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  auto r = api->put("/api/v1/network-mappings",
                    json{{"mappings", {{{"source_network", "VM Network"}, {"target_network_id", sim_seed::prod_network}}}}}
                        .dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  r = api->post("/api/v1/vms/" + vm_id + "/cutover", "");
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_NE(r.raw.find("Backup"), std::string::npos) << r.raw;
  EXPECT_TRUE(vma->power_calls().empty());
  expect_on_oma();
}

struct Injection {
  std::string step;
  json rule;  // simulator rule; null: the final pass's copy fails
};
void PrintTo(const Injection& i, std::ostream* os) { *os << i.step << " " << i.rule.dump(); }

class OmaCutoverFailure : public OmaFlow, public ::testing::WithParamInterface<Injection> {};

TEST_P(OmaCutoverFailure, LeavesTheOmaAndTheSourceAsTheyWere) {
  const Injection& inj = GetParam();
  ASSERT_EQ(replicate("full")["status"], "completed");
  std::string text = "injected failure at " + inj.step;
  if (inj.rule.is_null()) {
    vma->set_source("2001", "nbd+unix:///?socket=" + dir.file("no-such-socket"));  // the final copy fails
    text = "disk 2001 failed";
  } else {
    json rule = inj.rule;
    rule["errortext"] = text;
    sim.fail(rule);
  }
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  std::string error = job["error"];
  EXPECT_NE(error.find("failed at step " + inj.step), std::string::npos) << error;
  EXPECT_NE(error.find(text), std::string::npos) << error;
  EXPECT_NE(error.find("rolled back"), std::string::npos) << error;
  const json* failed = step(job, inj.step);
  ASSERT_NE(failed, nullptr) << job.dump(2);
  EXPECT_EQ((*failed)["status"], "failed");
  const json* rollback = step(job, "rollback");
  ASSERT_NE(rollback, nullptr) << job.dump(2);
  EXPECT_EQ((*rollback)["status"], "completed") << rollback->dump();

  // The source was shut down by us, and is on again.
  EXPECT_TRUE(vma->powered_on(vm_id));
  auto calls = vma->power_calls();
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back(), "on " + vm_id);
  EXPECT_EQ(vm_status(), "replicated");
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 1u) << "a VM was left behind";
  EXPECT_EQ(sim.state()["volumes"].size(), kDisks.size()) << "a volume was left behind or lost";
  if (inj.rule.is_null()) {
    vma->set_source("2001", sources[2]->uri());
  }
  expect_on_oma();
  // Replication goes on from where it was.
  sim.clear_failures();
  mk::test::write_random_at(images["2000"], 2 * MiB, 64 * KiB, 11);
  json next = replicate("incremental");
  ASSERT_EQ(next["status"], "completed") << next.dump(2);
  expect_on_oma();
}

INSTANTIATE_TEST_SUITE_P(
    EachStep, OmaCutoverFailure,
    ::testing::Values(
        Injection{"final-pass", nullptr},
        Injection{"detach-from-oma", {{"command", "detachVolume"}, {"how", "job"}, {"skip", 1}}},
        Injection{"deploy-vm", {{"command", "deployVirtualMachine"}, {"how", "job"}}},
        Injection{"replace-root", {{"command", "deleteVolume"}, {"how", "error"}, {"errorcode", 431}}},
        Injection{"replace-root", {{"command", "attachVolume"}, {"how", "job"}}},
        Injection{"attach-data-disks", {{"command", "attachVolume"}, {"how", "job"}, {"skip", 2}}},
        Injection{"start-vm", {{"command", "startVirtualMachine"}, {"how", "job"}}}),
    [](const auto& info) {
      std::string n = info.param.step + "_" + std::to_string(info.index);
      for (auto& c : n) if (c == '-') c = '_';
      return n;
    });

TEST_F(OmaFlow, TestFailoverAndCleanupLeaveReplicationWhereItWas) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  auto ids = volume_ids();
  json job = run_job("/api/v1/vms/" + vm_id + "/test-failover");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(job["kind"], "test_failover");
  EXPECT_EQ(vm_status(), "test_failover");
  EXPECT_TRUE(vma->powered_on(vm_id)) << "the source must keep running";
  EXPECT_TRUE(vma->power_calls().empty());
  json st = sim.state();
  ASSERT_EQ(st["virtualmachines"].size(), 2u);
  json test_vm;
  for (const auto& v : st["virtualmachines"]) if (v["id"] != sim.oma_vm_id()) test_vm = v;
  EXPECT_EQ(test_vm["name"].get<std::string>().rfind("web01-test-", 0), 0u) << test_vm["name"];
  EXPECT_EQ(test_vm["state"], "Running");
  for (const auto& nic : test_vm["nic"]) EXPECT_EQ(nic["networkid"], sim_seed::test_network);
  EXPECT_EQ(st["snapshots"].size(), kDisks.size());
  EXPECT_EQ(sim_volume(ids["2000"])["deviceid"], 0);
  // No replication while the volumes are away.
  auto r = api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", "incremental"}}.dump());
  EXPECT_EQ(r.status, 409) << r.raw;

  // The test VM writes to its disk: the cleanup throws that away.
  std::string os_volume_file = sim.dir() + "/state/volumes/" + ids["2000"] + ".img";
  mk::test::write_random_at(os_volume_file, 0, 64 * KiB, 99);
  job = run_job("/api/v1/vms/" + vm_id + "/test-failover/cleanup");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(step_names(job), (std::vector<std::string>{"destroy-test-vm", "revert-snapshots", "delete-snapshots",
                                                       "return-to-oma"}));
  st = sim.state();
  EXPECT_EQ(st["virtualmachines"].size(), 1u);
  EXPECT_EQ(st["snapshots"].size(), 0u);
  EXPECT_EQ(vm_status(), "replicated");
  expect_on_oma();  // including the OS disk's data: the test VM's write is gone

  // Replication continues from the committed change IDs.
  mk::test::write_random_at(images["2001"], 0, 64 * KiB, 12);
  json next = replicate("incremental");
  ASSERT_EQ(next["status"], "completed") << next.dump(2);
  expect_on_oma();
  // And a second cleanup has nothing to do.
  EXPECT_EQ(api->post("/api/v1/vms/" + vm_id + "/test-failover/cleanup", "").status, 409);
}

TEST_F(OmaFlow, FailedTestFailoverRollsBackOrLeavesWhatTheCleanupNeeds) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  // A clean rollback: as if nothing happened.
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no capacity"}});
  json job = run_job("/api/v1/vms/" + vm_id + "/test-failover");
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("no capacity"), std::string::npos) << job["error"];
  EXPECT_EQ(vm_status(), "replicated");
  EXPECT_EQ(sim.state()["snapshots"].size(), 0u);
  expect_on_oma();

  // A rollback that cannot revert a volume: the record stays, the VM stays in test
  // failover (no replication into a volume the test VM wrote), the cleanup finishes it.
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no capacity"}});
  sim.fail({{"command", "revertSnapshot"}, {"how", "job"}, {"errortext", "primary storage busy"}});
  job = run_job("/api/v1/vms/" + vm_id + "/test-failover");
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("ROLLBACK INCOMPLETE"), std::string::npos) << job["error"];
  EXPECT_EQ(vm_status(), "test_failover");
  EXPECT_EQ(api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", "incremental"}}.dump()).status, 409);
  job = run_job("/api/v1/vms/" + vm_id + "/test-failover/cleanup");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(vm_status(), "replicated");
  EXPECT_EQ(sim.state()["snapshots"].size(), 0u);
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 1u);
  expect_on_oma();
}

// A cutover that fails (start-vm) and whose rollback cannot finish (the new VM cannot
// be destroyed, disk 2001's volume cannot be attached to the OMA again): the job says
// ROLLBACK INCOMPLETE naming that VM and that volume and what to do, the rollback step
// records it, the VM is cutover_failed, which refuses passes, cutovers and test
// failovers, and the rollback job finishes it once the causes are gone.
TEST_F(OmaFlow, CutoverRollbackThatCannotFinishHoldsTheVmUntilItIsFinished) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  auto ids = volume_ids();
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no host with capacity"}});
  sim.fail({{"command", "destroyVirtualMachine"}, {"how", "error"}, {"errorcode", 530},
            {"errortext", "VM is locked by another job"}});
  sim.fail({{"command", "attachVolume"}, {"how", "job"}, {"errortext", "primary storage busy"},
            {"params", {{"id", ids["2001"]}, {"virtualmachineid", sim.oma_vm_id()}}}});
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  std::string built;
  const json st = sim.state();
  for (const auto& v : st["virtualmachines"]) if (v["id"] != sim.oma_vm_id()) built = v["id"];
  ASSERT_FALSE(built.empty()) << "the VM the rollback could not destroy is not there";
  std::string error = job["error"];
  for (const std::string& expected :
       {std::string("failed at step start-vm"), std::string("no host with capacity"),
        std::string("ROLLBACK INCOMPLETE"), "CloudStack VM " + built + " is still there",
        std::string("VM is locked by another job"), "volume " + ids["2001"] + " (disk 2001) is not back on the OMA",
        std::string("primary storage busy"), std::string("it is detached: attach it to the OMA's VM"),
        "POST /api/v1/vms/" + vm_id + "/cutover/rollback"}) {
    EXPECT_NE(error.find(expected), std::string::npos) << expected << "\n in: " << error;
  }
  EXPECT_EQ(error.find("(disk 2000)"), std::string::npos) << error;
  const json* rollback = step(job, "rollback");
  ASSERT_NE(rollback, nullptr) << job.dump(2);
  EXPECT_EQ((*rollback)["status"], "failed");
  EXPECT_NE((*rollback)["message"].dump().find(ids["2001"]), std::string::npos) << rollback->dump();
  EXPECT_EQ(vm_status(), "cutover_failed");
  EXPECT_TRUE(vma->powered_on(vm_id)) << "what could be undone was: the source runs again";

  // Held until the rollback is finished: no pass, no cutover, no test failover.
  auto r = api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", "incremental"}}.dump());
  EXPECT_EQ(r.status, 409) << r.raw;
  EXPECT_NE(r.raw.find("/cutover/rollback"), std::string::npos) << r.raw;
  r = api->post("/api/v1/vms/" + vm_id + "/cutover", "");
  EXPECT_EQ(r.status, 409) << r.raw;
  r = api->post("/api/v1/vms/" + vm_id + "/test-failover", "");
  EXPECT_EQ(r.status, 409) << r.raw;

  job = run_job("/api/v1/vms/" + vm_id + "/cutover/rollback");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(step_names(job), std::vector<std::string>{"rollback"});
  EXPECT_EQ(vm_status(), "replicated");
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 1u) << "the VM was not removed";
  expect_on_oma();
  EXPECT_EQ(api->post("/api/v1/vms/" + vm_id + "/cutover/rollback", "").status, 409) << "nothing left to finish";
  mk::test::write_random_at(images["2001"], 0, 64 * KiB, 13);
  json next = replicate("incremental");
  ASSERT_EQ(next["status"], "completed") << next.dump(2);
  expect_on_oma();
}

// The source cannot be powered on again during the rollback (vCenter refuses through
// the VMA): the volumes are back, the job says the source is still off and what to do,
// and the VM is held until the rollback job has powered it on.
TEST_F(OmaFlow, CutoverRollbackThatCannotPowerTheSourceOnSaysItIsStillOff) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  vma->fail_power_on("PowerOnVM_Task: the host is in maintenance mode");
  sim.fail({{"command", "startVirtualMachine"}, {"how", "job"}, {"errortext", "no host with capacity"}});
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  std::string error = job["error"];
  for (const std::string& expected :
       {std::string("ROLLBACK INCOMPLETE"), "the source VM web01 (" + vm_id + ") is still powered OFF",
        std::string("the host is in maintenance mode"), std::string("power it on in vCenter"),
        "POST /api/v1/vms/" + vm_id + "/cutover/rollback"}) {
    EXPECT_NE(error.find(expected), std::string::npos) << expected << "\n in: " << error;
  }
  EXPECT_EQ(error.find("is not back on the OMA"), std::string::npos) << error;
  EXPECT_FALSE(vma->powered_on(vm_id));
  EXPECT_EQ(vm_status(), "cutover_failed");
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 1u);
  expect_on_oma();
  EXPECT_EQ(api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", "incremental"}}.dump()).status, 409);

  vma->fail_power_on("");
  job = run_job("/api/v1/vms/" + vm_id + "/cutover/rollback");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_TRUE(vma->powered_on(vm_id));
  EXPECT_EQ(vma->power_calls().back(), "on " + vm_id);
  EXPECT_EQ(vm_status(), "replicated");
  expect_on_oma();
}

TEST_F(OmaFlow, CutoverCutShortByACrashFailsAtTheNextStartSayingWhatToCheck) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  OmaConfig c = oma->config();
  oma->stop();
  oma.reset();
  {
    // What the database holds after a crash mid-cutover: the job active, its body gone.
    db::SqliteDatabase database(dir.file("data/oma.db"));
    Repositories repos(database);
    JobRecord j;
    j.job_id = "0c0c0c0c-0000-4000-8000-000000000001";
    j.vm_id = vm_id;
    j.kind = JobKind::Cutover;
    j.status = JobStatus::Running;
    j.phase = "deploy-vm";
    j.created_at = now_ms();
    repos.jobs.create_job(j, {});
  }
  oma = std::make_unique<Oma>(c);
  oma->start();
  api = std::make_unique<ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
  json job = test::wait_for_job(*api, "0c0c0c0c-0000-4000-8000-000000000001", test::job_ended);
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("restarted during this cutover (last phase: deploy-vm)"),
            std::string::npos)
      << job["error"];
  EXPECT_EQ(vm_status(), "cutover_interrupted");
}

// CloudStack's rules as a pass meets them (issue 15, items 1 and 11): a disk over
// custom.diskoffering.size.max and VM snapshots on the OMA's VM are findings of the
// preflight route and refuse the pass at its preflight step, before any volume exists;
// kvm.snapshot.enabled off is a note.
class OmaCloudRules : public OmaFlow {
 protected:
  static mk::cloudstack::test::SimOptions rules() {
    mk::cloudstack::test::SimOptions o;
    o.custom_disk_max_gb = 1;
    o.oma_vm_snapshot = true;
    return o;
  }
  OmaCloudRules() : OmaFlow(rules()) {}
};

TEST_F(OmaCloudRules, CloudStackFindingsRefuseThePassBeforeAnythingIsCreated) {
  const std::string big = test::test_vm_uuid(0x52);
  add_other_vm(big, "big01", {{"2000", 0, 1 * GiB}, {"2001", 1, 2 * GiB}});
  json pf = preflight_of(big);
  EXPECT_EQ(pf["blocked"], true) << pf.dump(2);
  EXPECT_EQ(codes(pf["findings"]), (std::set<std::string>{"disk-too-large", "oma-vm-snapshots"})) << pf.dump(2);
  for (const auto& f : pf["findings"]) {
    if (f["code"] == "disk-too-large") {
      EXPECT_EQ(f["disk_key"], "2001") << f.dump();
      EXPECT_NE(f["text"].get<std::string>().find("VM big01"), std::string::npos) << f.dump();
    }
  }
  EXPECT_TRUE(codes(pf["notes"]).count("kvm-snapshots-off")) << pf.dump(2);

  json job = run_job("/api/v1/jobs", {{"vm_id", big}, {"kind", "full"}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  std::string error = job["error"];
  EXPECT_NE(error.find("custom.diskoffering.size.max"), std::string::npos) << error;
  EXPECT_NE(error.find("deleteVMSnapshot"), std::string::npos) << error;
  EXPECT_NE(error.find("this job created nothing"), std::string::npos) << error;
  const json* pre = step(job, "preflight");
  ASSERT_NE(pre, nullptr) << job.dump(2);
  EXPECT_EQ((*pre)["status"], "failed");
  EXPECT_EQ(step(job, "preparing volumes"), nullptr) << job.dump(2);
  EXPECT_TRUE(sim.state()["volumes"].empty()) << sim.state()["volumes"].dump(2);
  EXPECT_TRUE(vma->replicate_requests().empty());
}

// Issue 15, item 8: the service offering's CPU range is checked before a cutover
// touches the source. Replication goes on (with a warning); the preflight shows the
// finding; the cutover and the test failover are refused at once, the source never
// shut down, nothing built.
class OmaOfferingTooSmall : public OmaFlow {
 protected:
  void SetUp() override {
    vm_cpus = 16;
    start("cloudstack");
  }
};

TEST_F(OmaOfferingTooSmall, CutoverIsRefusedBeforeTheSourceIsTouched) {
  json job = replicate("full");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  bool warned = false;
  for (const auto& e : job["events"]) {
    warned |= e["message"].get<std::string>().find("a cutover would be refused") != std::string::npos;
  }
  EXPECT_TRUE(warned) << job["events"].dump(2);
  json pf = preflight_of(vm_id);
  EXPECT_EQ(pf["blocked"], true);
  EXPECT_EQ(codes(pf["findings"]), std::set<std::string>{"offering-cpus"}) << pf.dump(2);

  auto r = api->post("/api/v1/vms/" + vm_id + "/cutover", json{{"shutdown_timeout_seconds", 30}}.dump());
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_NE(r.raw.find("16 vCPU"), std::string::npos) << r.raw;
  EXPECT_NE(r.raw.find("1 to 8"), std::string::npos) << r.raw;
  r = api->post("/api/v1/vms/" + vm_id + "/test-failover", "");
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_TRUE(vma->power_calls().empty());
  EXPECT_TRUE(vma->powered_on(vm_id));
  EXPECT_EQ(sim.state()["virtualmachines"].size(), 1u);
  EXPECT_EQ(vm_status(), "replicated");
  expect_on_oma();
}

// Issue 15, item 11: the OMA's VM holds at most maxdatavolumeslimit data volumes. A pass
// whose volumes do not fit waits, visibly, and goes on once a cutover of another VM
// has taken that VM's volumes away.
class OmaVolumeCap : public OmaFlow {
 protected:
  static mk::cloudstack::test::SimOptions cap() {
    mk::cloudstack::test::SimOptions o;
    o.max_data_volumes = 4;
    return o;
  }
  OmaVolumeCap() : OmaFlow(cap()) {}
};

TEST_F(OmaVolumeCap, APassWaitsForDataVolumeSlotsAndGoesOnWhenTheyAreFreed) {
  ASSERT_EQ(replicate("full")["status"], "completed");  // 3 of 4 slots taken
  const std::string db = test::test_vm_uuid(0x53);
  add_other_vm(db, "db01", {kDisks[1], kDisks[2]});  // 2 volumes: they do not fit
  auto r = api->post("/api/v1/jobs", json{{"vm_id", db}, {"kind", "full"}}.dump());
  ASSERT_EQ(r.status, 201) << r.raw;
  std::string waiting_job = r.body["job_id"];
  json waiting = test::wait_for_job(*api, waiting_job, [](const json& j) {
    return test::job_ended(j) || j.value("phase", "").find("waiting for") != std::string::npos;
  });
  ASSERT_EQ(waiting["status"], "preparing") << waiting.dump(2);
  std::string phase = waiting["phase"];
  EXPECT_NE(phase.find("waiting for 2 free data-volume slot(s)"), std::string::npos) << phase;
  EXPECT_NE(phase.find("KVM allows 4 data volumes per VM; 3 are attached"), std::string::npos) << phase;
  const json* wait_step = step(waiting, "waiting for data-volume slots");
  ASSERT_NE(wait_step, nullptr) << waiting.dump(2);
  EXPECT_EQ((*wait_step)["status"], "running");
  EXPECT_EQ(sim.state()["volumes"].size(), kDisks.size()) << "the waiting pass created a volume";

  // web01's cutover moves its three volumes to its new VM: db01's pass goes on.
  json cut = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(cut["status"], "completed") << cut.dump(2);
  json done = test::wait_for_job(*api, waiting_job, test::job_ended);
  ASSERT_EQ(done["status"], "completed") << done.dump(2);
  wait_step = step(done, "waiting for data-volume slots");
  ASSERT_NE(wait_step, nullptr);
  EXPECT_EQ((*wait_step)["status"], "completed");
  int on_oma = 0;
  const json st = sim.state();  // kept: the loop must not run over a temporary's member
  for (const auto& v : st["volumes"]) on_oma += v["virtualmachineid"] == sim.oma_vm_id();
  EXPECT_EQ(on_oma, 2);
}

TEST_F(OmaVolumeCap, VolumesAwayOnATestFailoverKeepTheirSlots) {
  ASSERT_EQ(replicate("full")["status"], "completed");  // 3 of 4 slots taken
  json tf = run_job("/api/v1/vms/" + vm_id + "/test-failover");
  ASSERT_EQ(tf["status"], "completed") << tf.dump(2);  // web01's volumes are on its test VM
  const std::string db = test::test_vm_uuid(0x54);
  add_other_vm(db, "db01", {kDisks[1], kDisks[2]});
  auto r = api->post("/api/v1/jobs", json{{"vm_id", db}, {"kind", "full"}}.dump());
  ASSERT_EQ(r.status, 201) << r.raw;
  std::string waiting_job = r.body["job_id"];
  json waiting = test::wait_for_job(*api, waiting_job, [](const json& j) {
    return test::job_ended(j) || j.value("phase", "").find("waiting for") != std::string::npos;
  });
  ASSERT_EQ(waiting["status"], "preparing") << "db01 took the slots web01's cleanup needs: " << waiting.dump(2);
  EXPECT_NE(waiting["phase"].get<std::string>().find("3 more come back after test failovers"), std::string::npos)
      << waiting["phase"];

  // The cleanup brings web01's volumes back: they fit, because nobody took their slots.
  json cleanup = run_job("/api/v1/vms/" + vm_id + "/test-failover/cleanup");
  ASSERT_EQ(cleanup["status"], "completed") << cleanup.dump(2);
  expect_on_oma();
  json cut = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(cut["status"], "completed") << cut.dump(2);
  EXPECT_EQ(test::wait_for_job(*api, waiting_job, test::job_ended)["status"], "completed");
}

// The "local" backend: the local images are the final disks.
class LocalCutover : public OmaFlow {
 protected:
  void SetUp() override { start("local"); }
};

TEST_F(LocalCutover, FinalPassThenTheVmIsCutOver) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  vma->ignore_shutdown(true);  // the VMA powers it off after the timeout
  // Test failover needs CloudStack.
  auto r = api->post("/api/v1/vms/" + vm_id + "/test-failover", "");
  EXPECT_EQ(r.status, 400) << r.raw;
  mk::test::write_random_at(images["2000"], 1 * MiB, 64 * KiB, 21);
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  const json* fp = step(job, "final-pass");
  ASSERT_NE(fp, nullptr);
  EXPECT_EQ((*fp)["status"], "completed");
  ASSERT_NE(step(job, "mark-cut-over"), nullptr);
  EXPECT_EQ(vm_status(), "cut_over");
  EXPECT_FALSE(vma->powered_on(vm_id));
  for (const auto& v : oma->repos().storage.list_volumes()) {
    EXPECT_EQ(mk::test::first_difference(images[v.disk_key], v.device_path), std::nullopt) << v.disk_key;
  }
  EXPECT_EQ(vma->power_calls(), (std::vector<std::string>{"shutdown " + vm_id, "cleanup " + vm_id}));
  bool told = false;
  for (const auto& e : job["events"]) told |= e["message"].get<std::string>().find("did not shut down") != std::string::npos;
  EXPECT_TRUE(told) << job["events"].dump(2);
}

TEST_F(LocalCutover, FailedFinalPassPowersTheSourceOnAgain) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  vma->set_source("2001", "nbd+unix:///?socket=" + dir.file("no-such-socket"));
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover");
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("powered on again"), std::string::npos) << job["error"];
  EXPECT_TRUE(vma->powered_on(vm_id));
  EXPECT_EQ(vm_status(), "replicated");
  const json* rb = step(job, "rollback");
  ASSERT_NE(rb, nullptr);
  EXPECT_EQ((*rb)["status"], "completed");
}

// A source powered on while its final pass copies may have written what the volumes
// lack: the cutover stops, nothing is made final, and the source stays on.
TEST_F(LocalCutover, ASourcePoweredOnDuringTheFinalPassStopsTheCutover) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  vma->power_on_at_next_pass(vm_id);
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 30}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("was powered on during the final pass"), std::string::npos)
      << job["error"];
  EXPECT_EQ(step(job, "mark-cut-over"), nullptr);
  EXPECT_EQ(vm_status(), "replicated");
  EXPECT_TRUE(vma->powered_on(vm_id));
  EXPECT_TRUE(vma->violations().empty()) << vma->violations()[0];
}

// --convert-guests on the cloudstack backend, with the inspection's answer and the
// conversion given (no libguestfs, no qemu: the real ones are label guest): the job's
// logic through the whole OMA. The "conversion" writes a marker into every volume it is
// given, or fails.
class OmaFlowConversion : public OmaFlow {
 protected:
  void SetUp() override {
    tweak = [this](OmaConfig& c) {
      c.cutover.convert_guests = true;
      c.cutover.inspector = [this](const std::vector<guest::DiskImage>& disks) {
        inspected_disks = disks;
        guest::GuestInspection g;
        g.os_found = g.convertible = !no_os;
        g.reason = no_os ? "no operating system found on the VM's disks" : "";
        g.os_family = no_os ? "" : "linux";
        g.distro = no_os ? "" : "debian";
        g.version = "12.0";
        g.root_device = "/dev/sdb1";
        g.boot_disk = 1;  // the disk of unit 1 ("2001") holds the root filesystem
        g.firmware = "uefi";
        return g;
      };
      c.cutover.converter = [this](const std::vector<guest::DiskImage>& disks, const guest::ConversionOptions& o) {
        converted_disks = disks;
        firmware = o.firmware;
        guest::ConversionResult r;
        if (!fail_with.empty()) {
          r.error = fail_with;
          return r;
        }
        for (std::size_t i = 0; i < disks.size(); ++i) mk::test::write_at(disks[i].path, 300 * KiB, "CONVERTED");
        r.ok = true;
        return r;
      };
    };
    OmaFlow::SetUp();
  }
  std::string volume_file(const std::string& id) { return sim.dir() + "/state/volumes/" + id + ".img"; }
  std::vector<std::string> links_by_unit() {
    auto ids = volume_ids();
    return {link_of(ids["2000"]), link_of(ids["2001"]), link_of(ids["2002"])};
  }
  static std::vector<std::string> paths(const std::vector<guest::DiskImage>& disks) {
    std::vector<std::string> out;
    for (const auto& d : disks) out.push_back(d.path);
    return out;
  }

  bool no_os = false;
  std::string fail_with;
  std::vector<guest::DiskImage> inspected_disks, converted_disks;
  std::string firmware;
};

// A template per OS family or distro, through the API: keys and ids checked when saved,
// each template checked by the validation, returned by GET.
TEST_F(OmaFlowConversion, OsTemplatesAreSavedCheckedAndReturned) {
  auto with_templates = [this](const json& templates) {
    json body = sim.oma_settings();
    body["os_templates"] = templates;
    return body.dump();
  };
  auto r = api->put("/api/v1/settings/cloudstack", with_templates({{"debain", sim_seed::debian_template}}));
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_NE(r.raw.find("os_templates.debain"), std::string::npos) << r.raw;
  r = api->post("/api/v1/settings/cloudstack/validate",
                json{{"os_templates", {{"windows", sim_seed::unready_template}}}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["ok"], false);
  EXPECT_EQ(r.body["problems"][0]["field"], "os_templates.windows") << r.raw;
  r = api->put("/api/v1/settings/cloudstack", with_templates({{"debian", sim_seed::debian_template}}));
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(api->get("/api/v1/settings/cloudstack").body["os_templates"],
            (json{{"debian", sim_seed::debian_template}}));
}

TEST_F(OmaFlowConversion, CutoverConvertsOnTheOmasVmAndBuildsTheVmToMatchTheGuest) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  json settings = sim.oma_settings();
  settings["os_templates"] = {{"debian", sim_seed::debian_template}};
  auto saved = api->put("/api/v1/settings/cloudstack", settings.dump());
  ASSERT_EQ(saved.status, 200) << saved.raw;
  vma->set_firmware(vm_id, "efi", true);  // as the VMA reads vSphere's settings
  auto ids = volume_ids();
  const std::vector<std::string> links = links_by_unit();
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 5}});
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  std::vector<std::string> cutover_steps;  // without the final pass's own steps
  for (const auto& n : step_names(job)) {
    if (n == "guest-inspection" || n == "final-pass" || n == "guest-conversion" || n == "detach-from-oma" ||
        n == "deploy-vm")
      cutover_steps.push_back(n);
  }
  EXPECT_EQ(cutover_steps, (std::vector<std::string>{"guest-inspection", "final-pass", "guest-conversion",
                                                      "detach-from-oma", "deploy-vm"}));
  // Both on the volumes' devices on the OMA's VM, in unit order.
  EXPECT_EQ(paths(inspected_disks), links);
  EXPECT_EQ(paths(converted_disks), links);
  EXPECT_EQ(firmware, "uefi");
  for (const auto& d : kDisks) EXPECT_EQ(mk::test::read_at(volume_file(ids[d.key]), 300 * KiB, 9), "CONVERTED");

  json built;
  const json st = sim.state();  // kept: the loop must not run over a temporary's member
  for (const auto& v : st["virtualmachines"]) if (v["id"] != sim.oma_vm_id()) built = v;
  EXPECT_EQ(built["boottype"], "UEFI");
  EXPECT_EQ(built["bootmode"], "SECURE");  // vSphere had secure boot on
  EXPECT_EQ(built["guestosid"], sim_seed::os_debian_12);
  EXPECT_EQ(built["templateid"], sim_seed::debian_template);  // the distro's template
  EXPECT_EQ(sim_volume(ids["2001"])["deviceid"], 0);  // the inspected boot disk is the root
  EXPECT_EQ(sim_volume(ids["2001"])["type"], "ROOT");
  EXPECT_LT(sim_volume(ids["2000"])["deviceid"], sim_volume(ids["2002"])["deviceid"]);
  EXPECT_EQ(vm_status(), "cut_over");
}

TEST_F(OmaFlowConversion, AFailedConversionRollsTheCutoverBack) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  fail_with = "converting web01 with virt-v2v-in-place failed: no bootloader detected";
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 5}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("no bootloader detected"), std::string::npos) << job["error"];
  EXPECT_EQ((*step(job, "guest-conversion"))["status"], "failed");
  EXPECT_EQ((*step(job, "rollback"))["status"], "completed");
  EXPECT_EQ(step(job, "deploy-vm"), nullptr);
  EXPECT_TRUE(vma->powered_on(vm_id));
  EXPECT_EQ(vm_status(), "replicated");
  expect_on_oma();  // the volumes hold exactly the source's data
}

// Rolled back after the conversion wrote the volumes: an incremental pass from the
// committed change IDs would keep the conversion's writes (the source never made them)
// beside the source's, so the change IDs are forgotten and only a full pass is accepted,
// which makes the volumes the source's again.
TEST_F(OmaFlowConversion, ACutoverRolledBackAfterTheConversionWroteTheVolumesNeedsAFullPass) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  sim.fail({{"command", "deployVirtualMachine"}, {"how", "job"}});
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 5}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_EQ((*step(job, "guest-conversion"))["status"], "completed");
  EXPECT_EQ((*step(job, "rollback"))["status"], "completed");
  EXPECT_EQ(vm_status(), "replicated");
  bool told = false;
  for (const auto& e : job["events"]) told |= e["message"].get<std::string>().find("in full") != std::string::npos;
  EXPECT_TRUE(told) << job["events"].dump(2);
  sim.clear_failures();
  auto r = api->post("/api/v1/jobs", json{{"vm_id", vm_id}, {"kind", "incremental"}}.dump());
  EXPECT_EQ(r.status, 400) << r.raw;
  EXPECT_NE(r.raw.find("run a full replication first"), std::string::npos) << r.raw;
  ASSERT_EQ(replicate("full")["status"], "completed");
  expect_on_oma();
}

TEST_F(OmaFlowConversion, AGuestThatCannotBeConvertedIsRefusedBeforeTheSourceIsTouched) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  no_os = true;
  json job = run_job("/api/v1/vms/" + vm_id + "/cutover", {{"shutdown_timeout_seconds", 5}});
  ASSERT_EQ(job["status"], "failed") << job.dump(2);
  EXPECT_NE(job["error"].get<std::string>().find("no operating system"), std::string::npos) << job["error"];
  EXPECT_EQ(step_names(job), std::vector<std::string>{"guest-inspection"});
  EXPECT_TRUE(vma->power_calls().empty());
  EXPECT_EQ(vm_status(), "replicated");
  expect_on_oma();
  // The cutover's inspection is the VM's last one, shown with its reason.
  auto in = api->get("/api/v1/vms/" + vm_id + "/inspection");
  ASSERT_EQ(in.status, 200) << in.raw;
  EXPECT_EQ(in.body["job_id"], job["job_id"]);
  EXPECT_EQ(in.body["started_by"], "cutover");
  EXPECT_EQ(in.body["convertible"], false);
  EXPECT_EQ(in.body["reason"], "no operating system found on the VM's disks");
  EXPECT_EQ(api->get("/api/v1/vms").body["vms"][0]["guest"]["convertible"], false);
}

TEST_F(OmaFlowConversion, TestFailoverConvertsAfterTheSnapshotsAndTheCleanupUndoesIt) {
  ASSERT_EQ(replicate("full")["status"], "completed");
  auto ids = volume_ids();
  json job = run_job("/api/v1/vms/" + vm_id + "/test-failover");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  EXPECT_EQ(step_names(job), (std::vector<std::string>{"guest-inspection", "detach-from-oma", "snapshot-volumes",
                                                       "guest-conversion", "deploy-vm", "replace-root",
                                                       "attach-data-disks", "start-vm"}));
  for (const auto& d : kDisks) EXPECT_EQ(mk::test::read_at(volume_file(ids[d.key]), 300 * KiB, 9), "CONVERTED");
  EXPECT_EQ(sim_volume(ids["2001"])["deviceid"], 0);
  // An older VMA says nothing of the firmware: the disks decide (the inspection's UEFI).
  json test_vm;
  const json st = sim.state();
  for (const auto& v : st["virtualmachines"]) if (v["id"] != sim.oma_vm_id()) test_vm = v;
  EXPECT_EQ(test_vm["boottype"], "UEFI");
  EXPECT_EQ(test_vm["bootmode"], "LEGACY");
  json in = api->get("/api/v1/vms/" + vm_id + "/inspection").body;
  EXPECT_EQ(in["started_by"], "test_failover");
  EXPECT_EQ(in["boot_disk_key"], "2001");
  EXPECT_EQ(in["firmware"], "uefi");
  job = run_job("/api/v1/vms/" + vm_id + "/test-failover/cleanup");
  ASSERT_EQ(job["status"], "completed") << job.dump(2);
  expect_on_oma();  // the conversion is undone with the test VM's writes
  EXPECT_EQ(vm_status(), "replicated");
  ASSERT_EQ(replicate("incremental")["status"], "completed");
  expect_on_oma();
}

}  // namespace
}  // namespace mk::oma
