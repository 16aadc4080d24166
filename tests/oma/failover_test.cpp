// Failover between OMA nodes (issue 18, item 3; label scale): two real `oma` processes
// over one real MariaDB, the "cloudstack" volume backend against the CloudStack
// simulator serving one VM per node (each node's volumes appear in its own by-id
// directory), and the fake VMA copying real source files through NBD.
//
//  * A node SIGKILLed in the middle of a pass: its pass fails with a reason naming the
//    dead node, the surviving node takes the VM over (the simulator shows its volumes
//    detached from the dead node's VM and attached to the survivor's, never elsewhere),
//    the interrupted pass's change IDs are never committed, and the next pass on the
//    survivor starts from the last committed ones and leaves every target disk identical
//    to its source by SHA-256, although the interrupted pass left unknown writes on it.
//    The survivor starts the pass again by itself. The failover time (kill -> pass
//    failed, -> VM taken over and exported, -> its pass copying again on the survivor) is
//    printed, never asserted.
//  * A node frozen (SIGSTOP) until its lease expired and its VM was taken over, then
//    resumed: it withdraws its exports of the VM it lost, registers again without
//    touching the VM, and a pass it is asked to run is refused, the volumes staying on the
//    other node.
//  * Moves at the next pass (issue 18, item 2): a drained node's VM, and a VM an operator
//    moves (recorded, nothing moved at once), are moved when their next pass starts:
//    volumes detached from the old node's VM and attached to the new one's (never
//    elsewhere), exports there and withdrawn on the old node, the job's events saying
//    why, and the pass runs on the new node from the committed change IDs, every disk
//    identical to its source by SHA-256.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "cloudstack/volumes.h"
#include "engine/nbd_connection.h"
#include "fake_vma.h"
#include "mariadb_server.h"
#include "oma/db/repositories.h"
#include "oma_nodes_fixture.h"
#include "sim_server.h"
#include "support/files.h"
#include "support/nbdkit_server.h"
#include "support/net.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

using nlohmann::json;
using Node = OmaNode;

constexpr int64_t kCapacity = 1048576;
const std::vector<std::string> kKeys = {"2000", "2001"};

// Two nodes (oma-a on the simulator's OMA VM 1, oma-b on VM 2), one VM of two disks
// whose sources are real files, CloudStack configured.
struct Service {
  MariadbServer db_server;
  std::string url = db_server.create_database("oma_failover");
  mk::cloudstack::test::SimServer sim{[] {
    mk::cloudstack::test::SimOptions o;
    o.extra_oma_vms = 1;
    return o;
  }()};
  mk::test::TempDir dir{"mk-oma-failover"};
  FakeVma vma{(std::filesystem::create_directories(dir.file("oma-a")),
               mk::test::make_psk_file(dir.file("oma-a/nbd-psk.keys"), "oma"))};
  Node a, b;
  std::string vm = test_vm_uuid(1);
  std::vector<std::unique_ptr<mk::test::NbdkitServer>> sources;  // the source disks over NBD, as the VMA reads them
  std::unique_ptr<db::Database> conn;  // the test's own connection, to read what the nodes recorded
  std::unique_ptr<Repositories> repos;

  Service() {
    a = node("oma-a", 1);
    b = node("oma-b", 2);
    a.start(a.data);
    share_service_keys(a.data, b.data);
    b.start(a.data);
    conn = db::open_database(url);
    repos = std::make_unique<Repositories>(*conn);

    auto r = a.api->put("/api/v1/settings/cloudstack", sim.oma_settings().dump());
    EXPECT_EQ(r.status, 200) << r.raw;
    // A NIC mapped to a network, so that a cutover can build the VM.
    json mappings = {{"mappings", {{{"source_network", "VM Network"},
                                    {"target_network_id", mk::cloudstack::test::seed::prod_network},
                                    {"keep_mac", true}}}}};
    r = a.api->put("/api/v1/network-mappings", mappings.dump());
    EXPECT_EQ(r.status, 200) << r.raw;
    json body = vm_body(vm, static_cast<int>(kKeys.size()), kCapacity);
    body["nics"] = {{{"mac", "00:50:56:aa:bb:01"}, {"network", "VM Network"}}};
    r = a.api->post("/api/v1/vms", body.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    vma.add_source_vm(vm, "vm-" + vm.substr(32), true);
    for (size_t i = 0; i < kKeys.size(); ++i) {
      mk::test::write_random_at(source(kKeys[i]), 0, kCapacity, 100 + i);
      mk::test::NbdkitOptions o;
      o.plugin = "file";
      o.args = {"file=" + source(kKeys[i])};
      sources.push_back(std::make_unique<mk::test::NbdkitServer>(o));
      vma.set_source(kKeys[i], sources.back()->uri());
    }
  }
  Node node(const std::string& id, int n) {
    Node x;
    x.id = id;
    x.data = dir.file(id);
    x.log = dir.file(id + ".log");
    x.by_id = sim.by_id_dir(n);
    x.cloudstack_vm = sim.oma_vm_id(n);
    x.url = url;
    x.vma_url = vma.url();
    return x;
  }
  std::string source(const std::string& key) const { return dir.file("source-" + key + ".img"); }

  std::string start_pass(Node& n, const std::string& kind) {
    auto r = n.api->post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", kind}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body.value("job_id", "");
  }
  json job(Node& n, const std::string& id) { return n.api->get("/api/v1/jobs/" + id).body; }

  // The VM's volumes in CloudStack (by our VM tag): id -> the VM it is attached to ("" if none).
  std::map<std::string, std::string> attachments() { return volume_attachments(sim, vm); }
  std::vector<std::string> export_names() {
    std::vector<std::string> out;
    for (const auto& e : repos->storage.list_exports()) out.push_back(e.export_name);
    return out;
  }
  bool taken_over_by(const std::string& node_id) {
    auto t = repos->takeovers.find(vm);
    return t && t->to_node == node_id && t->step == TakeoverStep::Exported && t->finished_at;
  }
  // CloudStack VMs named `name` that are not destroyed.
  int cloud_vms_named(const std::string& name) {
    int n = 0;
    const json st = sim.state();
    for (const auto& v : st["virtualmachines"])
      n += v["name"] == name && v.value("state", "") != "Destroyed" && v.value("state", "") != "Expunging";
    return n;
  }
  std::string vm_name() const { return "vm-" + vm.substr(32); }
  // The first kCapacity bytes of the disk's volume, as node `n` sees its device.
  std::string target_sha256(const std::string& key) {
    auto v = repos->storage.find_volume(vm, key);
    if (!v) return "no volume";
    std::string copy = dir.file("target-" + key + ".img");
    std::filesystem::remove(copy);
    mk::test::write_at(copy, 0, mk::test::read_at(v->device_path, 0, kCapacity));
    return mk::test::sha256_file(copy);
  }
};

TEST(OmaFailover, ANodeKilledMidPassIsTakenOverAndTheNextPassFromCommittedChangeIdsMatchesTheSource) {
  Service s;
  // Pass 1 on oma-a (equal nodes: the lower id takes the VM).
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();
  ASSERT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-a");
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(1)) << id;
  ASSERT_EQ(s.attachments().size(), kKeys.size());

  // The guest writes; pass 2 on oma-a copies and is held in the middle; oma-a dies.
  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 256 * 1024, 65536, 200 + i);
  s.vma.hold_copies(true);
  std::string job2 = s.start_pass(s.a, "incremental");
  json copying = wait_for_job(*s.a.api, job2, [](const json& j) { return j["status"] == "copying" || job_ended(j); });
  ASSERT_EQ(copying["status"], "copying") << copying.dump();
  s.a.process->process.signal(SIGKILL);
  s.a.process->process.wait();
  auto killed = Clock::now();
  // What the interrupted pass left is unknown: it wrote somewhere (here: noise over the
  // area it changed and beyond, written through oma-a's device before its VM lets the
  // volume go), and the guest kept writing.
  for (size_t i = 0; i < kKeys.size(); ++i) {
    mk::test::write_random_at(s.repos->storage.find_volume(s.vm, kKeys[i])->device_path, 200 * 1024, 131072, 300 + i);
    mk::test::write_random_at(s.source(kKeys[i]), 700 * 1024, 4096, 400 + i);
  }
  s.vma.hold_copies(false);

  // oma-b fails the pass naming oma-a and takes the VM over; meanwhile the volumes are
  // only ever on oma-a's VM, on none, or on oma-b's.
  const std::set<std::string> allowed = {s.sim.oma_vm_id(1), "", s.sim.oma_vm_id(2)};
  int64_t failed_ms = -1, taken_ms = -1;
  bool elsewhere = false;
  ASSERT_TRUE(eventually([&] {
    for (const auto& [id, on] : s.attachments()) elsewhere = elsewhere || !allowed.count(on);
    if (failed_ms < 0 && job_ended(s.job(s.b, job2))) failed_ms = ms_since(killed);
    if (taken_ms < 0 && s.taken_over_by("oma-b")) taken_ms = ms_since(killed);
    return failed_ms >= 0 && taken_ms >= 0;
  })) << "oma-b did not take the VM over: " << (s.repos->takeovers.find(s.vm) ? s.repos->takeovers.find(s.vm)->error.value_or("") : "no takeover")
      << "\n" << mk::test::log_tail(s.b.log);
  EXPECT_FALSE(elsewhere) << "a volume was attached to a VM that is neither node's";
  json failed = s.job(s.b, job2);
  EXPECT_EQ(failed["status"], "failed") << failed.dump();
  std::string error = failed["error"].is_string() ? failed["error"].get<std::string>() : "";
  EXPECT_NE(error.find("OMA node oma-a stopped renewing its lease"), std::string::npos) << error;
  EXPECT_NE(error.find("node oma-b took VM " + s.vm + " over"), std::string::npos) << error;
  EXPECT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-b");
  HttpReply placement = s.b.api->get("/api/v1/vms/" + s.vm + "/placement");
  ASSERT_EQ(placement.status, 200) << placement.raw;
  EXPECT_EQ(placement.body["node_id"], "oma-b");
  EXPECT_EQ(placement.body["takeover"]["from_node"], "oma-a") << placement.raw;
  EXPECT_EQ(placement.body["takeover"]["step"], "exported") << placement.raw;
  EXPECT_EQ(placement.body["takeover"]["failed_job_id"], job2) << placement.raw;
  auto attached = s.attachments();
  ASSERT_EQ(attached.size(), kKeys.size());
  for (const auto& [id, on] : attached) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  for (const auto& name : s.export_names()) EXPECT_TRUE(s.b.serves(name)) << name << " not exported on oma-b";
  // The VMA was told to stop the interrupted pass's copy; its change IDs never committed.
  auto stopped = s.vma.stopped_jobs();
  EXPECT_NE(std::find(stopped.begin(), stopped.end(), job2), stopped.end());
  for (const auto& key : kKeys) {
    auto history = s.repos->jobs.cbt_history(s.vm, key);
    ASSERT_EQ(history.size(), 1u) << "disk " << key;
    EXPECT_EQ(history[0].job_id, job1);
  }

  // oma-b started the pass again by itself (an incremental one, as the failed pass was).
  std::string job3;
  int64_t running_ms = -1;
  ASSERT_TRUE(eventually([&] {
    for (const auto& j : s.repos->jobs.active_jobs())
      if (j.vm_id == s.vm && j.job_id != job2) job3 = j.job_id;
    if (job3.empty()) return false;
    json j = s.job(s.b, job3);
    if (j["status"] == "copying" || job_ended(j)) running_ms = ms_since(killed);
    return running_ms >= 0;
  })) << "oma-b did not start the VM's pass again\n" << mk::test::log_tail(s.b.log);
  EXPECT_NE(events_text(s.job(s.b, job2)).find("node oma-b started the VM's replication again as job " + job3),
            std::string::npos);
  json done3 = wait_for_job(*s.b.api, job3, job_ended);
  ASSERT_EQ(done3["status"], "completed") << done3.dump() << "\n" << mk::test::log_tail(s.b.log);
  EXPECT_EQ(done3["kind"], "incremental");

  // The next pass started from pass 1's committed change IDs, never pass 2's.
  bool found = false;
  for (const auto& r : s.vma.replicate_requests()) {
    if (r.job_id != job3) continue;
    found = true;
    EXPECT_EQ(r.kind, protocol::PassKind::Incremental);
    EXPECT_EQ(r.nbd.port, s.b.api->get("/health").body["nbd_port"].get<int>()) << "not oma-b's export server";
    for (const auto& d : r.disks)
      EXPECT_EQ(d.change_id_base.value_or(""), "cbt-" + job1 + "-" + d.disk_key.str()) << "disk " << d.disk_key.str();
  }
  EXPECT_TRUE(found);
  for (const auto& key : kKeys) EXPECT_EQ(s.target_sha256(key), mk::test::sha256_file(s.source(key))) << "disk " << key;
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;

  // oma-a comes back (restarted; its export links stayed behind when it was killed): it
  // registers again and withdraws them before anything else.
  std::vector<std::string> exports = s.export_names();
  for (const auto& name : exports) EXPECT_TRUE(s.a.serves(name)) << name << ": the killed node's link was expected to stay";
  s.a.start(s.a.data);
  for (const auto& name : exports) {
    EXPECT_FALSE(s.a.serves(name)) << name << ": oma-a serves an export of the VM it lost";
    EXPECT_TRUE(s.b.serves(name)) << name;
  }
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  EXPECT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-b");

  std::printf("failover (lease 3000 ms): node killed -> its pass failed %lld ms, -> VM taken over (volumes on oma-b, "
              "exported) %lld ms, -> its pass running again on oma-b (started by oma-b) %lld ms\n",
              static_cast<long long>(failed_ms), static_cast<long long>(taken_ms),
              static_cast<long long>(running_ms));
}

// A node SIGKILLed in the middle of a cutover, after it shut the source down, made the
// final pass, detached the volumes, built the VM in CloudStack and gave it the OS disk
// (its data disk's attach hangs in CloudStack): the surviving node fails the cutover
// naming the dead node, tears down the VM it built (found from what the cutover wrote
// ahead of each change), attaches the volumes to itself (never to a third VM), exports
// them, powers the source on again and sets the VM back to replicated; the next pass on
// the survivor runs from the committed change IDs and every disk matches its source.
TEST(OmaFailover, ACutoverInterruptedByADeadNodeIsRolledBackByTheSurvivor) {
  Service s;
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();
  ASSERT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-a");
  auto data_volume = s.repos->storage.find_volume(s.vm, kKeys[1]);
  ASSERT_TRUE(data_volume);

  // The guest writes; the cutover's final pass copies it, then its data disk's attach
  // to the new VM never finishes: oma-a dies there.
  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 320 * 1024, 65536, 800 + i);
  s.sim.fail({{"command", "attachVolume"}, {"how", "hang"}, {"params", {{"id", data_volume->volume_id}}}});
  HttpReply r = s.a.api->post("/api/v1/vms/" + s.vm + "/cutover", json{{"shutdown_timeout_seconds", 5}}.dump());
  ASSERT_EQ(r.status, 202) << r.raw;
  std::string cut = r.body.value("job_id", "");
  bool attaching = eventually([&] {
    json j = s.job(s.a, cut);
    if (job_ended(j)) return true;
    for (const auto& st : j["steps"])
      if (st["name"] == "attach-data-disks" && st["status"] == "running") return true;
    return false;
  });
  json before = s.job(s.a, cut);
  ASSERT_TRUE(attaching && !job_ended(before)) << before.dump() << "\n" << mk::test::log_tail(s.a.log);
  ASSERT_FALSE(s.vma.powered_on(s.vm)) << "the cutover shuts the source down first";
  ASSERT_EQ(s.cloud_vms_named(s.vm_name()), 1) << "the cutover built its VM";
  s.a.process->process.signal(SIGKILL);
  s.a.process->process.wait();
  auto killed = Clock::now();
  s.sim.clear_failures();

  // oma-b fails the cutover naming oma-a, undoes it and takes the volumes; meanwhile
  // they are on the VM the cutover built, on none, or on oma-b's, never on a third VM
  // once that one is gone.
  int64_t failed_ms = -1, taken_ms = -1;
  ASSERT_TRUE(eventually([&] {
    if (failed_ms < 0 && job_ended(s.job(s.b, cut))) failed_ms = ms_since(killed);
    if (taken_ms < 0 && s.taken_over_by("oma-b")) taken_ms = ms_since(killed);
    return failed_ms >= 0 && taken_ms >= 0;
  })) << "oma-b did not take the VM over: "
      << (s.repos->takeovers.find(s.vm) ? s.repos->takeovers.find(s.vm)->error.value_or("") : "no takeover") << "\n"
      << mk::test::log_tail(s.b.log);
  json failed = s.job(s.b, cut);
  EXPECT_EQ(failed["status"], "failed") << failed.dump();
  std::string error = failed["error"].is_string() ? failed["error"].get<std::string>() : "";
  EXPECT_NE(error.find("OMA node oma-a stopped renewing its lease"), std::string::npos) << error;
  EXPECT_NE(error.find("This cutover was interrupted; node oma-b rolls it back"), std::string::npos) << error;
  EXPECT_NE(events_text(failed).find("node oma-b undid this cutover"), std::string::npos) << events_text(failed);
  EXPECT_EQ(s.cloud_vms_named(s.vm_name()), 0) << "the VM the interrupted cutover built is still there";
  auto attached = s.attachments();
  ASSERT_EQ(attached.size(), kKeys.size());
  for (const auto& [id, on] : attached) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  for (const auto& name : s.export_names()) EXPECT_TRUE(s.b.serves(name)) << name << " not exported on oma-b";
  EXPECT_TRUE(s.vma.powered_on(s.vm)) << "the source was left powered off";
  json vm = s.b.api->get("/api/v1/vms/" + s.vm).body;
  EXPECT_EQ(vm["status"], "replicated") << vm.dump();
  EXPECT_TRUE(vm["failovers"].empty()) << vm.dump();
  for (const auto& key : kKeys) {  // only pass 1 committed; the final pass committed too
    auto history = s.repos->jobs.cbt_history(s.vm, key);
    ASSERT_FALSE(history.empty()) << "disk " << key;
  }

  // Replication goes on on oma-b; the disks end identical to their sources.
  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 900 * 1024, 4096, 900 + i);
  std::string next = s.start_pass(s.b, "incremental");
  json done = wait_for_job(*s.b.api, next, job_ended);
  ASSERT_EQ(done["status"], "completed") << done.dump() << "\n" << mk::test::log_tail(s.b.log);
  for (const auto& key : kKeys) EXPECT_EQ(s.target_sha256(key), mk::test::sha256_file(s.source(key))) << "disk " << key;
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  EXPECT_TRUE(s.vma.violations().empty()) << s.vma.violations()[0];
  std::printf("interrupted cutover (lease 3000 ms): node killed -> cutover failed %lld ms, -> rolled back (built VM "
              "gone, volumes on oma-b and exported, source on, VM replicated) %lld ms\n",
              static_cast<long long>(failed_ms), static_cast<long long>(taken_ms));
}

// A cutover killed once it had asked CloudStack to start the VM it built (the start
// hangs): that VM's guest may have booted and written to the volumes, so the survivor
// does not roll it back: the cutover fails naming the dead node, the takeover stops
// saying why and leaves that VM and its volumes alone. Once an operator has detached our
// volumes from it and destroyed it, the takeover goes on by itself.
TEST(OmaFailover, ACutoverInterruptedAfterItsVmWasStartedIsLeftToTheOperator) {
  Service s;
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();
  s.sim.fail({{"command", "startVirtualMachine"}, {"how", "hang"}});
  HttpReply r = s.a.api->post("/api/v1/vms/" + s.vm + "/cutover", json{{"shutdown_timeout_seconds", 5}}.dump());
  ASSERT_EQ(r.status, 202) << r.raw;
  std::string cut = r.body.value("job_id", "");
  ASSERT_TRUE(eventually([&] {
    const json j = s.job(s.a, cut);  // kept: the loop must not run over a temporary
    for (const auto& st : j["steps"])
      if (st["name"] == "start-vm" && st["status"] == "running") return true;
    return false;
  })) << s.job(s.a, cut).dump();
  s.a.process->process.signal(SIGKILL);
  s.a.process->process.wait();
  s.sim.clear_failures();

  std::string built;
  const json state = s.sim.state();
  for (const auto& v : state["virtualmachines"])
    if (v["name"] == s.vm_name()) built = v["id"];
  ASSERT_FALSE(built.empty());
  ASSERT_TRUE(eventually([&] {
    auto t = s.repos->takeovers.find(s.vm);
    return t && t->error && t->error->find("had started CloudStack VM " + built) != std::string::npos;
  })) << mk::test::log_tail(s.b.log);
  EXPECT_EQ(s.job(s.b, cut)["status"], "failed");
  EXPECT_EQ(s.b.api->get("/api/v1/vms/" + s.vm).body["status"], "cutover_failed");
  EXPECT_EQ(s.cloud_vms_named(s.vm_name()), 1) << "the started VM was torn down";
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, built) << "volume " << id;
  // Nothing else starts on the VM meanwhile.
  r = s.b.api->post("/api/v1/vms/" + s.vm + "/cutover", json{{"shutdown_timeout_seconds", 5}}.dump());
  EXPECT_EQ(r.status, 409) << r.raw;

  // The operator decides it was not the migrated VM: our volumes off it, it destroyed.
  mk::cloudstack::Client cloud(s.sim.endpoint(), mk::cloudstack::test::SimServer::fast_client_options());
  for (const auto& [id, on] : s.attachments()) cloud.call_async("detachVolume", {{"id", id}});
  cloud.call_async("destroyVirtualMachine", {{"id", built}, {"expunge", "true"}});
  ASSERT_TRUE(eventually([&] { return s.taken_over_by("oma-b"); }))
      << s.repos->takeovers.find(s.vm)->error.value_or("") << "\n" << mk::test::log_tail(s.b.log);
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  EXPECT_EQ(s.b.api->get("/api/v1/vms/" + s.vm).body["status"], "replicated");
  EXPECT_TRUE(s.vma.powered_on(s.vm));
}

// The same for a test failover killed while its test VM starts (its start hangs in
// CloudStack): the survivor removes the test VM, reverts and deletes the snapshots (the
// test VM's writes never reach the replicas), takes the volumes, and replication goes on.
TEST(OmaFailover, ATestFailoverInterruptedByADeadNodeIsCleanedUpByTheSurvivor) {
  Service s;
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();
  s.sim.fail({{"command", "startVirtualMachine"}, {"how", "hang"}});
  HttpReply r = s.a.api->post("/api/v1/vms/" + s.vm + "/test-failover", "");
  ASSERT_EQ(r.status, 202) << r.raw;
  std::string test = r.body.value("job_id", "");
  bool starting = eventually([&] {
    json j = s.job(s.a, test);
    if (job_ended(j)) return true;
    for (const auto& st : j["steps"])
      if (st["name"] == "start-vm" && st["status"] == "running") return true;
    return false;
  });
  json before = s.job(s.a, test);
  ASSERT_TRUE(starting && !job_ended(before)) << before.dump() << "\n" << mk::test::log_tail(s.a.log);
  auto test_vms = [&] {
    int n = 0;
    const json st = s.sim.state();
    for (const auto& v : st["virtualmachines"]) {
      std::string name = v.value("name", "");
      n += name.rfind(s.vm_name() + "-test-", 0) == 0 && v.value("state", "") != "Destroyed" &&
           v.value("state", "") != "Expunging";
    }
    return n;
  };
  ASSERT_EQ(test_vms(), 1);
  ASSERT_FALSE(s.sim.state()["snapshots"].empty());
  s.a.process->process.signal(SIGKILL);
  s.a.process->process.wait();
  s.sim.clear_failures();

  ASSERT_TRUE(eventually([&] { return job_ended(s.job(s.b, test)) && s.taken_over_by("oma-b"); }))
      << (s.repos->takeovers.find(s.vm) ? s.repos->takeovers.find(s.vm)->error.value_or("") : "no takeover") << "\n"
      << "record: "
      << (s.repos->vms.find_failover(s.vm, FailoverKind::TestFailover)
              ? s.repos->vms.find_failover(s.vm, FailoverKind::TestFailover)->details
              : "none")
      << "\n" << mk::test::log_tail(s.b.log);
  json failed = s.job(s.b, test);
  EXPECT_EQ(failed["status"], "failed") << failed.dump();
  EXPECT_NE(events_text(failed).find("node oma-b undid this test_failover"), std::string::npos) << events_text(failed);
  EXPECT_EQ(test_vms(), 0) << "the test VM is still there";
  const json after = s.sim.state();
  EXPECT_TRUE(after["snapshots"].empty()) << after["snapshots"].dump();
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  json vm = s.b.api->get("/api/v1/vms/" + s.vm).body;
  EXPECT_EQ(vm["status"], "replicated") << vm.dump();
  EXPECT_TRUE(vm["failovers"].empty()) << vm.dump();

  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 100 * 1024, 8192, 950 + i);
  std::string next = s.start_pass(s.b, "incremental");
  json done = wait_for_job(*s.b.api, next, job_ended);
  ASSERT_EQ(done["status"], "completed") << done.dump() << "\n" << mk::test::log_tail(s.b.log);
  for (const auto& key : kKeys) EXPECT_EQ(s.target_sha256(key), mk::test::sha256_file(s.source(key))) << "disk " << key;
}

TEST(OmaFailover, ANodeThatLostItsLeaseAndComesBackDoesNotTouchTheVmsItLost) {
  Service s;
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();
  std::vector<std::string> exports = s.export_names();
  ASSERT_EQ(exports.size(), kKeys.size());
  for (const auto& name : exports) ASSERT_TRUE(s.a.serves(name)) << name;
  int64_t incarnation = s.repos->nodes.find_node("oma-a")->node.incarnation;

  // A writer connected to oma-a's export server (as a VMA's copy is) writes while oma-a
  // holds its lease.
  const int a_port = s.a.api->get("/health").body["nbd_port"].get<int>();
  auto a_endpoint = [&](const std::string& name) {
    return Endpoint{fmt::format("nbds://127.0.0.1:{}/{}", a_port, name), {s.dir.file("oma-a/nbd-psk.keys"), ""},
                    "target"};
  };
  auto writer = engine::NbdConnection::open(a_endpoint(exports[0]));
  std::vector<char> block(4096, 'w');
  ASSERT_NO_THROW(writer->pwrite(block.data(), block.size(), 0));
  ASSERT_NO_THROW(writer->flush());

  // oma-a freezes (its VM hangs) past its lease: oma-b takes the VM over.
  s.a.process->process.signal(SIGSTOP);
  bool taken = eventually([&] { return s.taken_over_by("oma-b"); });
  // Still frozen: its export server, a live process of its own, no longer writes, through
  // the connection it had nor a new one (its writes are bound to oma-a's lease).
  bool stale_write = false, new_write = false;
  if (taken) {
    try {
      writer->pwrite(block.data(), block.size(), 8192);
      writer->flush();
      stale_write = true;
    } catch (const std::exception&) {
    }
    try {
      auto again = engine::NbdConnection::open(a_endpoint(exports[0]));
      again->pwrite(block.data(), block.size(), 8192);
      again->flush();
      new_write = true;
    } catch (const std::exception&) {
    }
  }
  s.a.process->process.signal(SIGCONT);
  ASSERT_TRUE(taken) << mk::test::log_tail(s.b.log);
  EXPECT_FALSE(stale_write) << "the frozen node's export server wrote through a connection it had after its VM was "
                               "taken over";
  EXPECT_FALSE(new_write) << "the frozen node's export server accepted a new writer after its VM was taken over";
  writer.reset();
  for (const auto& name : exports) EXPECT_TRUE(s.b.serves(name)) << name;

  // Back, oma-a learns it lost its lease, withdraws its exports of the VM, registers
  // again, and leaves the VM alone.
  EXPECT_TRUE(eventually([&] {
    for (const auto& name : exports)
      if (s.a.serves(name)) return false;
    return true;
  })) << "oma-a still serves the exports of the VM it lost\n" << mk::test::log_tail(s.a.log);
  EXPECT_TRUE(eventually([&] {
    auto n = s.repos->nodes.find_node("oma-a");
    return n && n->lease == LeaseState::Alive && n->node.incarnation > incarnation;
  }));
  EXPECT_NE(mk::test::read_file(s.a.log).find("fenced: export"), std::string::npos) << mk::test::log_tail(s.a.log);

  // A pass asked of oma-a is refused before it touches anything.
  std::string job2 = s.start_pass(s.a, "incremental");
  json refused = wait_for_job(*s.a.api, job2, job_ended);
  EXPECT_EQ(refused["status"], "failed") << refused.dump();
  EXPECT_NE(refused.dump().find("volumes are on OMA node oma-b"), std::string::npos) << refused.dump();
  for (const auto& name : exports) {
    EXPECT_FALSE(s.a.serves(name)) << name;
    EXPECT_TRUE(s.b.serves(name)) << name;
  }
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  EXPECT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-b");
}

// Checks what a pass that moved the VM from oma-a to oma-b left: the job `job2`
// completed on oma-b from pass `job1`'s committed change IDs, volumes and exports on
// oma-b only, disks identical to their sources. `seen_elsewhere`: a volume was seen
// attached to neither node's VM while the pass ran.
void expect_moved_to_b(Service& s, const std::string& job1, const std::string& job2, bool seen_elsewhere,
                       const std::string& why) {
  EXPECT_FALSE(seen_elsewhere) << "a volume was attached to a VM that is neither node's";
  json done = s.job(s.b, job2);
  ASSERT_EQ(done["status"], "completed") << done.dump() << "\n" << mk::test::log_tail(s.b.log);
  EXPECT_EQ(done["kind"], "incremental");
  std::string events = events_text(done);
  EXPECT_NE(events.find("moving volumes from node oma-a to node oma-b because " + why), std::string::npos) << events;
  EXPECT_NE(events.find("node oma-b: the VM's volumes are here"), std::string::npos) << events;
  EXPECT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-b");
  HttpReply placement = s.a.api->get("/api/v1/vms/" + s.vm + "/placement");
  ASSERT_EQ(placement.status, 200) << placement.raw;
  EXPECT_EQ(placement.body["node_id"], "oma-b");
  EXPECT_TRUE(placement.body["requested_node_id"].is_null()) << placement.raw;
  EXPECT_EQ(placement.body["takeover"]["kind"], "move") << placement.raw;
  EXPECT_EQ(placement.body["takeover"]["from_node"], "oma-a") << placement.raw;
  EXPECT_EQ(placement.body["takeover"]["step"], "exported") << placement.raw;
  auto attached = s.attachments();
  ASSERT_EQ(attached.size(), kKeys.size());
  for (const auto& [id, on] : attached) EXPECT_EQ(on, s.sim.oma_vm_id(2)) << "volume " << id;
  // The exports live on oma-b now; oma-a withdrew its own (its fencing sweep).
  std::vector<std::string> exports = s.export_names();
  ASSERT_EQ(exports.size(), kKeys.size());
  for (const auto& name : exports) EXPECT_TRUE(s.b.serves(name)) << name << " not exported on oma-b";
  EXPECT_TRUE(eventually([&] {
    for (const auto& name : exports)
      if (s.a.serves(name)) return false;
    return true;
  })) << "oma-a still serves an export of the VM that moved\n" << mk::test::log_tail(s.a.log);
  // The pass went to oma-b's export server, incremental from pass 1's change IDs.
  bool found = false;
  for (const auto& r : s.vma.replicate_requests()) {
    if (r.job_id != job2) continue;
    found = true;
    EXPECT_EQ(r.kind, protocol::PassKind::Incremental);
    EXPECT_EQ(r.nbd.port, s.b.api->get("/health").body["nbd_port"].get<int>()) << "not oma-b's export server";
    for (const auto& d : r.disks)
      EXPECT_EQ(d.change_id_base.value_or(""), "cbt-" + job1 + "-" + d.disk_key.str()) << "disk " << d.disk_key.str();
  }
  EXPECT_TRUE(found) << "the VMA was never asked to copy pass " << job2;
  for (const auto& key : kKeys) EXPECT_EQ(s.target_sha256(key), mk::test::sha256_file(s.source(key))) << "disk " << key;
}

// Waits for the job to end, watching the volumes' attachments meanwhile.
bool wait_watching(Service& s, Node& n, const std::string& job, bool& seen_elsewhere) {
  const std::set<std::string> allowed = {s.sim.oma_vm_id(1), "", s.sim.oma_vm_id(2)};
  return eventually([&] {
    for (const auto& [id, on] : s.attachments()) seen_elsewhere = seen_elsewhere || !allowed.count(on);
    return job_ended(s.job(n, job));
  }, 90);
}

TEST(OmaMove, ADrainedNodesVmMovesToAnotherNodeAtItsNextPass) {
  Service s;
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();
  ASSERT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-a");
  for (const auto& name : s.export_names()) ASSERT_TRUE(s.a.serves(name)) << name;

  // Draining moves nothing by itself: the VM stays until its next pass.
  HttpReply r = s.a.api->post("/api/v1/nodes/oma-a/drain", "");
  ASSERT_EQ(r.status, 200) << r.raw;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a failover round of each node
  EXPECT_EQ(s.repos->placements.find(s.vm)->node_id.value_or(""), "oma-a");
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(1)) << "volume " << id;

  // The guest writes; the next pass is asked of the drained node, where the VM is.
  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 128 * 1024, 65536, 500 + i);
  std::string job2 = s.start_pass(s.a, "incremental");
  bool elsewhere = false;
  ASSERT_TRUE(wait_watching(s, s.b, job2, elsewhere)) << mk::test::log_tail(s.b.log);
  expect_moved_to_b(s, job1, job2, elsewhere, "oma-a is drained");

  // The next pass, asked of oma-b, runs there with nothing to move.
  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 512 * 1024, 4096, 600 + i);
  std::string job3 = s.start_pass(s.b, "incremental");
  json done3 = wait_for_job(*s.b.api, job3, job_ended);
  ASSERT_EQ(done3["status"], "completed") << done3.dump();
  EXPECT_EQ(events_text(done3).find("moving volumes"), std::string::npos) << events_text(done3);
  for (const auto& key : kKeys) EXPECT_EQ(s.target_sha256(key), mk::test::sha256_file(s.source(key))) << "disk " << key;
}

TEST(OmaMove, AnOperatorsMoveIsRecordedAndDoneAtTheVmsNextPass) {
  Service s;
  std::string job1 = s.start_pass(s.a, "full");
  json done1 = wait_for_job(*s.a.api, job1, job_ended);
  ASSERT_EQ(done1["status"], "completed") << done1.dump();

  HttpReply r = s.a.api->post("/api/v1/vms/" + s.vm + "/move", json{{"node_id", "oma-b"}}.dump());
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["node_id"], "oma-a") << r.raw;
  EXPECT_EQ(r.body["requested_node_id"], "oma-b") << r.raw;
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  for (const auto& [id, on] : s.attachments()) EXPECT_EQ(on, s.sim.oma_vm_id(1)) << "moved before its next pass";

  // The next pass, asked of the node it moves to this time.
  for (size_t i = 0; i < kKeys.size(); ++i) mk::test::write_random_at(s.source(kKeys[i]), 64 * 1024, 65536, 700 + i);
  std::string job2 = s.start_pass(s.b, "incremental");
  bool elsewhere = false;
  ASSERT_TRUE(wait_watching(s, s.b, job2, elsewhere)) << mk::test::log_tail(s.b.log);
  expect_moved_to_b(s, job1, job2, elsewhere, "an operator moved it to node oma-b");
}

}  // namespace
}  // namespace mk::oma::test
