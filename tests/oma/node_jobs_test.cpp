// Passes on an OMA node (issue 18): a VM is placed on a node before its pass attaches
// volumes; a VM that fits nowhere waits, still preparing, its phase naming the limit and
// the slots it needs, and its pass goes on once slots are freed. A VM placed on another
// node is refused with where to run it.
#include <gtest/gtest.h>

#include <filesystem>
#include <thread>

#include "fake_vma.h"
#include "oma/errors.h"
#include "oma_service.h"
#include "placement_checks.h"
#include "support/files.h"
#include "support/migratekit_runner.h"

namespace mk::oma {
namespace {

using nlohmann::json;

struct NodeService {
  mk::test::TempDir dir{"mk-oma-node-jobs"};
  test::FakeVma vma{(std::filesystem::create_directories(dir.file("data")),
                     mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"))};
  std::unique_ptr<Oma> oma;
  std::unique_ptr<test::ApiClient> api;

  explicit NodeService(int lease_ms = 15000) {
    vma.set_auto_complete(true);
    OmaConfig c = test::test_config(dir.file("data"), vma.url());
    c.node.node_id = "oma-a";
    c.node.lease_ms = lease_ms;
    c.node.volume_slots = 2;
    c.volume_slot_poll_ms = 50;
    oma = std::make_unique<Oma>(c);
    oma->start();
    api = std::make_unique<test::ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
  }
  void add_vm(const std::string& id, int disks) {
    auto r = api->post("/api/v1/vms", test::vm_body(id, disks, 1048576).dump());
    ASSERT_EQ(r.status, 201) << r.raw;
  }
  std::string start(const std::string& id) {
    auto r = api->post("/api/v1/jobs", json{{"vm_id", id}, {"kind", "full"}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body.value("job_id", "");
  }
};

TEST(NodeJobs, APassWaitsForANodeWithRoomAndGoesOnWhenSlotsFree) {
  NodeService s;
  const std::string vm1 = test::test_vm_uuid(1), vm2 = test::test_vm_uuid(2);
  s.add_vm(vm1, 2);
  s.add_vm(vm2, 1);
  json done = test::wait_for_job(*s.api, s.start(vm1), test::job_ended);
  ASSERT_EQ(done["status"], "completed") << done.dump();
  auto p1 = s.api->get("/api/v1/vms/" + vm1 + "/placement");
  ASSERT_EQ(p1.status, 200) << p1.raw;
  EXPECT_EQ(p1.body["node_id"], "oma-a");
  EXPECT_EQ(p1.body["slots"], 2);

  // The node's two slots hold VM 1's volumes: VM 2's pass waits, saying why.
  std::string job2 = s.start(vm2);
  json waiting = test::wait_for_job(*s.api, job2, [](const json& j) {
    return j.value("phase", "").find("needs 1 data-volume slot") != std::string::npos || test::job_ended(j);
  });
  EXPECT_EQ(waiting["status"], "preparing") << waiting.dump();
  EXPECT_NE(waiting["phase"].get<std::string>().find("the most free on any active node is 0 (node oma-a)"),
            std::string::npos)
      << waiting.dump();
  auto nodes = s.api->get("/api/v1/nodes");
  ASSERT_EQ(nodes.status, 200) << nodes.raw;
  ASSERT_EQ(nodes.body["queue"].size(), 1u) << nodes.raw;
  EXPECT_EQ(nodes.body["queue"][0]["vm_id"], vm2);
  EXPECT_EQ(nodes.body["queue"][0]["waiting_limit"], "volume_slots");
  EXPECT_EQ(nodes.body["nodes"][0]["slots_used"], 2);

  // VM 1's volumes leave the node (what a cutover's detach does): VM 2 takes the slot.
  ASSERT_TRUE(s.oma->repos().placements.release_vm(vm1));
  json finished = test::wait_for_job(*s.api, job2, test::job_ended);
  EXPECT_EQ(finished["status"], "completed") << finished.dump();
  EXPECT_EQ(s.api->get("/api/v1/vms/" + vm2 + "/placement").body["node_id"], "oma-a");
  EXPECT_TRUE(s.api->get("/api/v1/nodes").body["queue"].empty());
}

// A node whose renewals cannot get through (here: SQLite, whose one writer at a time is
// the OMA's own long transaction) stops believing it holds its lease once a lease has
// passed, although no renewal failed yet: the database may have expired it. It holds
// it again, as a new incarnation, once renewing works.
TEST(NodeJobs, ANodeWhoseRenewalsAreStuckStopsBelievingItHoldsTheLease) {
  const int lease_ms = 600;
  NodeService s(lease_ms);
  NodeLease* lease = s.oma->node_lease();
  ASSERT_NE(lease, nullptr);
  ASSERT_TRUE(lease->held());
  const int64_t first = lease->grant().incarnation;
  bool held_while_stuck = true;
  s.oma->repos().database.transaction([&] {
    s.oma->repos().database.exec("UPDATE oma_nodes SET volume_slots = volume_slots WHERE node_id = 'oma-a'");
    std::this_thread::sleep_for(std::chrono::milliseconds(3 * lease_ms));
    held_while_stuck = lease->held();
  });
  EXPECT_FALSE(held_while_stuck);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!lease->held() && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_TRUE(lease->held());
  EXPECT_GT(lease->grant().incarnation, first);
}

TEST(NodeJobs, APassOfAVmPlacedOnAnotherNodeIsRefusedSayingWhere) {
  NodeService s;
  const std::string vm = test::test_vm_uuid(1);
  s.add_vm(vm, 1);
  test::register_placement_node(s.oma->repos(), "oma-b", 32);
  s.oma->repos().nodes.set_state("oma-a", NodeState::Draining);
  ASSERT_EQ(s.oma->repos().placements.place_vm(vm).node_id.value_or(""), "oma-b");
  json failed = test::wait_for_job(*s.api, s.start(vm), test::job_ended);
  EXPECT_EQ(failed["status"], "failed") << failed.dump();
  EXPECT_NE(failed.dump().find("volumes are on OMA node oma-b"), std::string::npos) << failed.dump();
}

// Fencing (issue 18, item 3): once the VM is placed on another node (taken over while
// this node was frozen or cut off), this node refuses every export change for it, and its
// next failover round withdraws the exports it still serves; a pass it is asked to run is
// refused before anything is touched.
TEST(NodeJobs, ANodeThatLostAVmRefusesExportChangesAndWithdrawsItsExports) {
  NodeService s;
  const std::string vm = test::test_vm_uuid(1);
  s.add_vm(vm, 1);
  json done = test::wait_for_job(*s.api, s.start(vm), test::job_ended);
  ASSERT_EQ(done["status"], "completed") << done.dump();
  Repositories& r = s.oma->repos();
  DiskRecord disk = r.vms.list_disks(vm).at(0);
  VolumeRecord volume = r.storage.find_volume(vm, disk.disk_key).value();
  std::string name = r.storage.list_exports().at(0).export_name;
  const std::string link = s.dir.file("data/exports/" + name);
  ASSERT_TRUE(std::filesystem::is_symlink(link));
  EXPECT_NO_THROW(s.oma->exports().ensure_export(disk, volume));  // still ours

  // Another node took the VM over (what its claim writes).
  test::register_placement_node(r, "oma-b", 32);
  r.database.exec("UPDATE vm_placements SET node_id = 'oma-b' WHERE vm_id = ?", {vm});
  try {
    s.oma->exports().ensure_export(disk, volume);
    ADD_FAILURE() << "node oma-a changed the export of a VM placed on oma-b";
  } catch (const Conflict& e) {
    EXPECT_NE(std::string(e.what()).find("its volumes are placed on node oma-b"), std::string::npos) << e.what();
  }
  ASSERT_NE(s.oma->node_failover(), nullptr);
  s.oma->node_failover()->tick();
  EXPECT_FALSE(std::filesystem::is_symlink(link)) << "node oma-a still serves " << name;
  json refused = test::wait_for_job(*s.api, s.start(vm), test::job_ended);
  EXPECT_EQ(refused["status"], "failed") << refused.dump();
  EXPECT_FALSE(std::filesystem::is_symlink(link));
}

// The operator's commands: `migratekit nodes`, `nodes drain|activate NODE`, `move VM NODE`.
TEST(NodeJobs, TheCliListsDrainsAndMoves) {
  NodeService s;
  const std::string vm = test::test_vm_uuid(1);
  s.add_vm(vm, 1);
  test::register_placement_node(s.oma->repos(), "oma-b", 4);
  ASSERT_EQ(s.oma->repos().placements.place_vm(vm).node_id.value_or(""), "oma-b");  // both empty: more free slots
  auto cli = [&](std::vector<std::string> args) {
    args.insert(args.end(), {"--api", "http://127.0.0.1:" + std::to_string(s.oma->api_port()), "--token-file",
                             s.dir.file("data/admin.token")});
    return mk::test::run_migratekit(args);
  };
  auto list = cli({"nodes"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("oma-a"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("oma-b"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("alive"), std::string::npos) << list.out;
  auto drain = cli({"nodes", "drain", "oma-a"});
  EXPECT_EQ(drain.exit_code, 0) << drain.err;
  EXPECT_NE(drain.out.find("node oma-a is draining"), std::string::npos) << drain.out;
  auto refused = cli({"move", vm, "oma-a"});  // a draining node takes no VM
  EXPECT_EQ(refused.exit_code, 2) << refused.out;
  EXPECT_NE(refused.err.find("node oma-a is draining"), std::string::npos) << refused.err;
  EXPECT_EQ(cli({"nodes", "activate", "oma-a"}).exit_code, 0);
  auto moved = cli({"move", vm, "oma-a"});
  EXPECT_EQ(moved.exit_code, 0) << moved.err;
  EXPECT_NE(moved.out.find("moves from node oma-b to node oma-a"), std::string::npos) << moved.out;
  EXPECT_EQ(s.oma->repos().placements.find(vm)->requested_node_id.value_or(""), "oma-a");
  EXPECT_NE(cli({"nodes", "drain", "../x"}).exit_code, 0);  // never put into a URL
}

}  // namespace
}  // namespace mk::oma
