// Takeovers of a dead node's VMs (issue 18, item 3) on SQLite, with the steps outside the
// database recorded by the test: what is claimed (VMs of nodes whose lease expired, not
// of one that stopped cleanly, one claimer only), the running pass failed naming the
// dead node and never committed, each step run once in order, a takeover whose step
// failed finished at the next round, and the fence refusing VMs placed elsewhere; moves
// between live nodes claimed when a pass starts. The real processes, CloudStack and
// exports: failover_test.cpp (label scale).
#include <gtest/gtest.h>

#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "oma/errors.h"
#include "oma/nodes/node_failover.h"
#include "placement_checks.h"
#include "repository_scenarios.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

TEST(Takeover, DeadNodesVmsAreClaimedOnceTheirPassFailedAndEveryStepRunsOnceEvenAfterAFailure) {
  mk::test::TempDir dir("mk-takeover");
  db::SqliteDatabase database(dir.file("oma.db"));
  db::migrate(database);
  Repositories r(database);
  const std::string vm1 = placement_vm_id(1), vm2 = placement_vm_id(2), vm3 = placement_vm_id(3);
  register_placement_node(r, "oma-dead", 8);
  add_placement_vm(r, 1, 2);
  add_placement_vm(r, 2, 1);
  ASSERT_EQ(r.placements.place_vm(vm1).node_id.value_or(""), "oma-dead");
  ASSERT_EQ(r.placements.place_vm(vm2).node_id.value_or(""), "oma-dead");
  // vm1 has a pass in the middle of its copy on oma-dead.
  const std::string job = "0b000000-0000-4000-8000-000000000001";
  r.jobs.create_job(job_record(job, vm1), job_disk_records(job, 2));
  r.jobs.set_job_status(job, JobStatus::Copying, "copying");
  // The VMA had reported its disks done: only the commit was left.
  for (auto d : r.jobs.job_disks(job)) {
    d.status = protocol::DiskStatus::Completed;
    d.change_id_new = "cbt-interrupted-" + d.disk_key;
    r.jobs.update_disk_progress(d);
  }
  // oma-gone stopped cleanly (released): its VM stays until it comes back.
  register_placement_node(r, "oma-gone", 8);
  r.nodes.set_state("oma-dead", NodeState::Draining);
  add_placement_vm(r, 3, 1);
  ASSERT_EQ(r.placements.place_vm(vm3).node_id.value_or(""), "oma-gone");
  ASSERT_TRUE(r.nodes.release("oma-gone", 1));
  // oma-dead's lease runs out (by the database's clock).
  database.exec("UPDATE oma_nodes SET lease_expires_at = 0 WHERE node_id = 'oma-dead'");

  NodeLease lease(r.nodes, test_node("oma-live", 8), {std::chrono::milliseconds(60000),
                                                      std::chrono::milliseconds(20000), std::chrono::milliseconds(1000)});
  lease.start();
  std::vector<std::string> calls;
  bool fail_detach = true;
  TakeoverActions a;
  a.stop_copy = [&](const TakeoverRecord& t) { calls.push_back("stop " + t.failed_job_id.value_or("?")); };
  a.detach = [&](const TakeoverRecord& t) {
    EXPECT_EQ(t.from_node, "oma-dead");
    if (t.vm_id == vm1 && fail_detach) {
      fail_detach = false;
      throw Error("CloudStack answered 530");
    }
    calls.push_back("detach " + t.vm_id);
  };
  a.attach = [&](const TakeoverRecord& t) { calls.push_back("attach " + t.vm_id); };
  a.export_volumes = [&](const TakeoverRecord& t) { calls.push_back("export " + t.vm_id); };
  a.resume = [&](const TakeoverRecord& t) { calls.push_back("resume " + t.vm_id); };
  NodeFailover failover(r.takeovers, lease, a, {std::chrono::hours(1), true});

  failover.tick();
  // vm1's pass failed, naming the dead node; its takeover stopped at the detach.
  JobRecord failed = r.jobs.get_job(job);
  EXPECT_EQ(failed.status, JobStatus::Failed);
  EXPECT_NE(failed.error.value_or("").find("OMA node oma-dead stopped renewing its lease"), std::string::npos)
      << failed.error.value_or("");
  EXPECT_NE(failed.error.value_or("").find("node oma-live took VM " + vm1 + " over"), std::string::npos);
  EXPECT_THROW(r.jobs.commit_change_ids(job), Error);  // the interrupted pass never commits
  EXPECT_TRUE(r.jobs.cbt_history(vm1, "2000").empty());
  auto t1 = r.takeovers.find(vm1);
  ASSERT_TRUE(t1);
  EXPECT_EQ(t1->step, TakeoverStep::Claimed);
  EXPECT_EQ(t1->failed_job_id.value_or(""), job);
  EXPECT_NE(t1->error.value_or("").find("CloudStack answered 530"), std::string::npos);
  EXPECT_EQ(r.takeovers.find(vm2)->step, TakeoverStep::Exported);
  EXPECT_FALSE(r.takeovers.find(vm3));  // a released node's VM is not taken
  EXPECT_EQ(r.placements.find(vm3)->node_id.value_or(""), "oma-gone");

  failover.tick();  // the next round finishes vm1's takeover
  EXPECT_EQ(r.takeovers.find(vm1)->step, TakeoverStep::Exported);
  EXPECT_TRUE(r.takeovers.find(vm1)->finished_at);
  EXPECT_FALSE(r.takeovers.find(vm1)->error);
  // resume runs for every takeover: it adopts a pass handed to the node, or starts the failed one again.
  EXPECT_EQ(calls, (std::vector<std::string>{"stop " + job, "detach " + vm2, "attach " + vm2, "export " + vm2,
                                             "resume " + vm2, "stop " + job, "detach " + vm1, "attach " + vm1,
                                             "export " + vm1, "resume " + vm1}));
  for (const auto& vm : {vm1, vm2}) EXPECT_EQ(r.placements.find(vm)->node_id.value_or(""), "oma-live");
  failover.tick();  // nothing left: no step runs again
  EXPECT_EQ(calls.size(), 10u);

  // Nobody else can claim them now; the fence refuses what is placed elsewhere.
  register_placement_node(r, "oma-other", 8);
  EXPECT_FALSE(r.takeovers.claim_one("oma-other"));
  EXPECT_NO_THROW(failover.check_owner(vm1));
  try {
    failover.check_owner(vm3);
    ADD_FAILURE() << "the fence let node oma-live change the exports of a VM placed on oma-gone";
  } catch (const Conflict& e) {
    EXPECT_NE(std::string(e.what()).find("placed on node oma-gone"), std::string::npos) << e.what();
  }
  // A VM placed on no node (cut over: its placement released; or queued) is no node's
  // to export either: only the sweep used to catch it.
  ASSERT_TRUE(r.placements.release_vm(vm2));
  try {
    failover.check_owner(vm2);
    ADD_FAILURE() << "the fence let node oma-live change the exports of a VM placed on no node";
  } catch (const Conflict& e) {
    EXPECT_NE(std::string(e.what()).find("placed on no node"), std::string::npos) << e.what();
  }
  lease.stop();
}

// A dead node's boot check (or inspection) only read overlays of the replicas there: the
// claim fails it saying that nothing is undone, and the VM is replicated again (it was
// held as if a test failover had to be undone).
TEST(Takeover, ADeadNodesBootCheckIsFailedAndItsVmIsReplicatedAgain) {
  mk::test::TempDir dir("mk-takeover");
  db::SqliteDatabase database(dir.file("oma.db"));
  db::migrate(database);
  Repositories r(database);
  const std::string vm = placement_vm_id(1);
  register_placement_node(r, "oma-dead", 8);
  add_placement_vm(r, 1, 1);
  ASSERT_EQ(r.placements.place_vm(vm).node_id.value_or(""), "oma-dead");
  const std::string job = "0b000000-0000-4000-8000-0000000000b1";
  JobRecord check = job_record(job, vm);
  check.kind = JobKind::BootCheck;
  check.status = JobStatus::Running;
  check.phase = "booting";
  r.jobs.create_job(check, {});
  r.vms.set_vm_status(vm, VmStatus::BootChecking);
  register_placement_node(r, "oma-live", 8);
  database.exec("UPDATE oma_nodes SET lease_expires_at = 0 WHERE node_id = 'oma-dead'");
  auto t = r.takeovers.claim_one("oma-live");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->failed_job_id.value_or(""), job);
  const JobRecord failed = r.jobs.get_job(job);
  EXPECT_EQ(failed.status, JobStatus::Failed);
  EXPECT_NE(failed.error.value_or("").find("nothing is undone"), std::string::npos) << failed.error.value_or("");
  EXPECT_EQ(r.vms.get_vm(vm).status, VmStatus::Replicated);
}

// A node is judged dead only while its lease is still expired and it is the incarnation
// the claim judged: one that renewed (registered again) keeps its VMs.
TEST(Takeover, ANodeThatRegisteredAgainKeepsItsVms) {
  mk::test::TempDir dir("mk-takeover");
  db::SqliteDatabase database(dir.file("oma.db"));
  db::migrate(database);
  Repositories r(database);
  register_placement_node(r, "oma-a", 8);
  add_placement_vm(r, 1, 1);
  ASSERT_EQ(r.placements.place_vm(placement_vm_id(1)).node_id.value_or(""), "oma-a");
  register_placement_node(r, "oma-b", 8);
  database.exec("UPDATE oma_nodes SET lease_expires_at = 0 WHERE node_id = 'oma-a'");
  ASSERT_TRUE(r.nodes.register_node(test_node("oma-a"), 600000));  // back before anyone claimed
  EXPECT_FALSE(r.takeovers.claim_one("oma-b"));
  EXPECT_EQ(r.placements.find(placement_vm_id(1))->node_id.value_or(""), "oma-a");
}

// Moves between live nodes (issue 18, item 2), claimed when a pass of the VM starts: a VM
// whose node is drained goes to the least loaded active node, one an operator moves to
// that node; a VM on an active node without a move stays; a move that cannot happen says
// why and leaves the VM; an unfinished move is answered again, not claimed twice; and
// the pass is handed to the target node until the volumes are attached there.
TEST(Takeover, MovesAreClaimedWhenAPassOfADrainedOrMovedVmStarts) {
  mk::test::TempDir dir("mk-takeover");
  db::SqliteDatabase database(dir.file("oma.db"));
  db::migrate(database);
  Repositories r(database);
  const std::string vm1 = placement_vm_id(1), vm2 = placement_vm_id(2), vm3 = placement_vm_id(3);
  register_placement_node(r, "oma-a", 8);
  add_placement_vm(r, 1, 2);
  add_placement_vm(r, 2, 1);
  ASSERT_EQ(r.placements.place_vm(vm1).node_id.value_or(""), "oma-a");
  ASSERT_EQ(r.placements.place_vm(vm2).node_id.value_or(""), "oma-a");
  register_placement_node(r, "oma-b", 8);
  register_placement_node(r, "oma-c", 8);
  database.exec("UPDATE oma_nodes SET cloudstack_vm_id = 'cs-' || node_id");

  // On an active node, without a move: nothing.
  MoveClaim none = r.takeovers.claim_move(vm1);
  EXPECT_FALSE(none.move);
  EXPECT_TRUE(none.not_moved.empty()) << none.not_moved;

  // An operator's move: to that node, the request consumed.
  r.placements.request_move(vm1, "oma-c");
  MoveClaim moved = r.takeovers.claim_move(vm1);
  ASSERT_TRUE(moved.move);
  EXPECT_TRUE(moved.claimed_now);
  EXPECT_EQ(moved.move->kind, TakeoverKind::Move);
  EXPECT_EQ(moved.move->from_node, "oma-a");
  EXPECT_EQ(moved.move->from_cloudstack_vm_id, "cs-oma-a");
  EXPECT_EQ(moved.move->to_node, "oma-c");
  EXPECT_EQ(moved.move->step, TakeoverStep::Claimed);
  EXPECT_EQ(moved.move->reason, "moving volumes from node oma-a to node oma-c because an operator moved it to node oma-c");
  auto p1 = r.placements.find(vm1);
  EXPECT_EQ(p1->node_id.value_or(""), "oma-c");
  EXPECT_FALSE(p1->requested_node_id);
  // Asked again before it is done: the same move, not a new claim.
  MoveClaim again = r.takeovers.claim_move(vm1);
  ASSERT_TRUE(again.move);
  EXPECT_FALSE(again.claimed_now);
  EXPECT_EQ(again.move->to_node, "oma-c");
  EXPECT_EQ(r.takeovers.find(vm1)->kind, TakeoverKind::Move);

  // A drained node's VM: to the least loaded active node (oma-b: oma-c holds vm1).
  r.nodes.set_state("oma-a", NodeState::Draining);
  MoveClaim drained = r.takeovers.claim_move(vm2);
  ASSERT_TRUE(drained.move);
  EXPECT_TRUE(drained.claimed_now);
  EXPECT_EQ(drained.move->to_node, "oma-b");
  EXPECT_EQ(drained.move->reason, "moving volumes from node oma-a to node oma-b because oma-a is drained");
  EXPECT_EQ(r.placements.find(vm2)->node_id.value_or(""), "oma-b");

  // Nowhere to go: the VM stays and the claim says why.
  add_placement_vm(r, 3, 1);
  r.nodes.set_state("oma-a", NodeState::Active);
  r.nodes.set_state("oma-b", NodeState::Draining);
  r.nodes.set_state("oma-c", NodeState::Draining);
  ASSERT_EQ(r.placements.place_vm(vm3).node_id.value_or(""), "oma-a");
  r.nodes.set_state("oma-a", NodeState::Draining);
  MoveClaim stuck = r.takeovers.claim_move(vm3);
  EXPECT_FALSE(stuck.move);
  EXPECT_NE(stuck.not_moved.find("is due to move (oma-a is drained)"), std::string::npos) << stuck.not_moved;
  EXPECT_EQ(r.placements.find(vm3)->node_id.value_or(""), "oma-a");
  r.nodes.set_state("oma-b", NodeState::Active);

  // The pass of vm2 is handed to oma-b until its volumes are attached there; then it goes
  // on there (and on no other node).
  NodeLease lease(r.nodes, test_node("oma-b", 8), {std::chrono::milliseconds(60000),
                                                   std::chrono::milliseconds(20000), std::chrono::milliseconds(1000)});
  database.exec("UPDATE oma_nodes SET lease_expires_at = 0 WHERE node_id = 'oma-b'");  // let this lease take it
  lease.start();
  std::vector<std::string> calls;
  TakeoverActions a;
  a.detach = [&](const TakeoverRecord& t) { calls.push_back("detach " + t.vm_id + " from " + t.from_cloudstack_vm_id); };
  a.attach = [&](const TakeoverRecord& t) { calls.push_back("attach " + t.vm_id); };
  a.export_volumes = [&](const TakeoverRecord& t) { calls.push_back("export " + t.vm_id); };
  a.resume = [&](const TakeoverRecord& t) {
    calls.push_back("resume " + t.vm_id);
    // The pass the resume adopts goes on here: the volumes are attached.
    MoveClaim here = r.takeovers.claim_move(t.vm_id);
    ASSERT_TRUE(here.move);
    EXPECT_EQ(here.move->step, TakeoverStep::Attached);
  };
  NodeFailover failover(r.takeovers, lease, a, {std::chrono::hours(1), true});
  PassMove handed = failover.move_before_pass(vm2);
  EXPECT_TRUE(handed.handed_off);
  EXPECT_NE(handed.message.find("moving from node oma-a to node oma-b"), std::string::npos) << handed.message;
  failover.tick();
  EXPECT_EQ(calls, (std::vector<std::string>{"detach " + vm2 + " from cs-oma-a", "attach " + vm2, "export " + vm2,
                                             "resume " + vm2}));
  EXPECT_EQ(r.takeovers.find(vm2)->step, TakeoverStep::Exported);
  PassMove stays = failover.move_before_pass(vm2);
  EXPECT_FALSE(stays.handed_off);
  EXPECT_TRUE(stays.message.empty()) << stays.message;
  lease.stop();

  // vm1's move to oma-c was claimed and never started; oma-c dies: the node that takes
  // vm1 over detaches its volumes from oma-a's VM, where they still are.
  database.exec("UPDATE oma_nodes SET lease_expires_at = 0 WHERE node_id = 'oma-c'");
  register_placement_node(r, "oma-d", 8);
  auto t = r.takeovers.claim_one("oma-d");
  ASSERT_TRUE(t);
  EXPECT_EQ(t->vm_id, vm1);
  EXPECT_EQ(t->from_node, "oma-c");
  EXPECT_EQ(t->from_cloudstack_vm_id, "cs-oma-a") << t->reason;
  EXPECT_EQ(t->kind, TakeoverKind::Failover);
  EXPECT_NE(t->reason.find("had claimed it from node oma-a"), std::string::npos) << t->reason;
}

}  // namespace
}  // namespace mk::oma::test
