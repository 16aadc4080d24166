// Resume, not restart, within a running VMA (issue 14, item 8): the real `vma` copying
// a VM from vcsim's flat files into the real `oma` binary's nbdkit exports (TLS PSK)
// loses its NBD target at 60 % of a full pass, for longer than the copy engine's own
// reconnection attempts, and gets it back:
//
//  * the export server is SIGKILLed by its PID while the OMA (its supervisor) is held
//    with SIGSTOP, and comes back when the OMA is let go (its supervisor starts it again
//    on the same port);
//  * the OMA itself is SIGKILLed by its PID (its export servers die with it: they are
//    its children, without --keep-export-server) and started again on the same data
//    directory and NBD port: its recovery follows the VMA's job, which still runs.
//
// Either way the VMA does not restart: each disk's copy waits for its target and resumes
// from its checkpoint. The pass completes with its change IDs committed, the bytes the
// data disk copied after the cut (the VMA's own counters: bytes_done minus
// bytes_resumed) are at most what was left at the cut plus one window — the engine's
// bytes in flight (request size × requests, capped by bytes_in_flight) and those
// confirmed within one checkpoint interval (1 s) at the reader's rate limit, written but
// maybe not flushed and so copied again — and every disk equals its source by sha256.
// When the pass's snapshot was removed in vSphere during the outage, every disk starts
// over on a new snapshot instead, says why, and ends identical.
//
// The SSH tunnel itself cut (NBD inside SSH: `vma run --nbd-over-ssh`, paired with the
// OMA through a real sshd): the VMA's ssh client is SIGKILLed by its PID (the VMA's
// child running ssh) at 55 % of the data disk; the VMA's tunnel supervisor starts ssh
// again, and each of the disk's connections through the forward is reopened (by the
// engine's own reconnection, or, had the tunnel stayed away longer, by the resume from
// the checkpoint). The pass completes, the data disk's bytes written after the cut (the
// VMA's count of the run that completed it: written + zeroed, less what was done at the
// cut unless it resumed from the checkpoint) are at most what was left plus one window
// per connection, and every disk equals its source.
// Conditions are waited for with a bound (the bound only stops a hung test); no time is
// asserted.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <regex>
#include <thread>

#include "engine/copier.h"
#include "oma_binary.h"
#include "support/eventually.h"
#include "vma_fixture.h"

namespace mk::vma::test {
namespace {

using nlohmann::json;
using protocol::DiskStatus;

constexpr uint64_t kOutageDisk = 48ull << 20;
constexpr uint64_t kOutageReadRate = 4ull << 20;  // bytes/s per reader: the pass lasts long enough to be cut

// The tunnel cut: a larger disk read faster, so that one window per connection (the SSH
// mode copies over several) stays well below what is left at the cut.
constexpr uint64_t kTunnelDisk = 96ull << 20;
constexpr uint64_t kTunnelReadRate = 8ull << 20;

// What the VMA logs when a disk's copy lost its target and waits to resume it.
constexpr const char* kWaiting = "its target went away";

// What the VMA's log says the run that completed `disk` of `job` wrote: "job J: disk K
// (label) copied: W bytes written, Z zeroed, C NBD connection(s), R reconnection(s), ...".
struct CopiedLine {
  int64_t written = -1, zeroed = 0;
  int connections = 0, reconnections = 0;
};
CopiedLine copied_line(const std::string& vma_log, const std::string& job, const std::string& disk) {
  std::regex line("job " + job + ": disk " + disk +
                  R"( \([^)]*\) copied: (\d+) bytes written, (\d+) zeroed, (\d+) NBD connection\(s\), (\d+) reconnection\(s\))");
  std::smatch m;
  CopiedLine c;
  if (std::regex_search(vma_log, m, line)) {
    c.written = std::stoll(m[1]);
    c.zeroed = std::stoll(m[2]);
    c.connections = std::stoi(m[3]);
    c.reconnections = std::stoi(m[4]);
  }
  return c;
}

class OutageResume : public VmaFixture {
 protected:
  void TearDown() override {
    if (HasFailure() && oma_bin) std::cerr << "oma log:\n" << mk::test::log_tail(oma_bin->log(), 6000) << "\n";
    oma_bin.reset();
    VmaFixture::TearDown();
  }

  // The VM with a second disk of kOutageDisk written all through (every byte is read),
  // the VMA reading at kOutageReadRate, the OMA binary, the VM registered, a full pass
  // started; returns the job.
  std::string start_full_pass(uint64_t seed) {
    prepare_data_vm(kOutageDisk, seed);
    start_vma({.read_rate = std::to_string(kOutageReadRate)});
    // A fixed NBD port: the OMA started again serves the port the VMA's job names.
    oma_bin = std::make_unique<OmaBinary>(dir.file("oma"), vma->url(), token_file,
                                          OmaBinaryOptions{.nbd_port = mk::test::free_tcp_port(), .vma_timeout_s = 120});
    start_oma_binary("oma-1.log");
    register_vm(vm.instance_uuid);
    return start_job(vm.instance_uuid, "full");
  }

  // The VM with a second disk of `bytes`, both written all through (every byte is read).
  void prepare_data_vm(uint64_t bytes, uint64_t seed) {
    vm = vm_at("DC0/vm/DC0_H0_VM0");
    vm = mk::test::add_lab_disk(*session, vm, vm.disks.at(0).controller_key, "LocalDS_0", bytes, "data");
    EXPECT_EQ(vm.disks.size(), 2u);
    for (auto& d : vm.disks) {
      std::string flat = lab.flat_file(d.file_name);
      mk::test::create_sparse_file(flat, d.capacity_bytes);
      mk::test::write_random_at(flat, 0, d.capacity_bytes, seed++);
      flats[vm.instance_uuid][d.key] = flat;
    }
  }

  void start_oma_binary(const std::string& log) {
    oma_bin->start(dir.file(log));
    api = std::make_unique<oma::test::ApiClient>(oma_bin->port(), oma::test::read_admin_token(dir.file("oma")));
  }

  pid_t export_server_pid() { return api->get("/health").body.value("export_server_pid", -1); }

  // The data disk's progress once it reported `fraction` of its plan done.
  protocol::DiskProgress data_disk_at(const std::string& job, double fraction) {
    return disk_at(job, std::to_string(vm.disks.at(1).key), fraction);
  }

  // A full pass of the data VM through a VMA paired over SSH (NBD through its forward),
  // with a rate-limited reader: the job id.
  std::string start_pass_through_the_tunnel(int seed) {
    prepare_data_vm(kTunnelDisk, seed);
    std::string vma_id = start_paired_over_ssh({.read_rate = std::to_string(kTunnelReadRate)});
    register_vm(vm.instance_uuid, vma_id);
    return start_job(vm.instance_uuid, "full");
  }

  // Until the VMA's tunnel supervisor runs an ssh client other than `old`.
  void expect_ssh_started_again(pid_t old) {
    ASSERT_TRUE(mk::test::eventually([&] {
      pid_t now = vma_ssh_pid();
      return now > 0 && now != old;
    }, 120)) << "the VMA's tunnel supervisor did not start ssh again";
  }

  // Until the VMA's copy lost its target and waits to resume it; fails the test when a
  // disk failed instead (what a VMA without the resume does).
  void expect_vma_waits_to_resume(const std::string& job) {
    std::string failed;
    bool waiting = mk::test::eventually([&] {
      for (const auto& d : client->progress(job).disks) {
        if (d.status == DiskStatus::Failed) failed = d.error.value_or("failed");
      }
      return !failed.empty() || mk::test::read_file(vma->log_path()).find(kWaiting) != std::string::npos;
    }, 120);
    ASSERT_TRUE(failed.empty()) << "a disk failed when its target went away: " << failed;
    ASSERT_TRUE(waiting) << "the VMA's copy never noticed its target was gone";
  }

  // The pass completed, with every disk committed, the data disk within the bound, every
  // disk identical to its source.
  void expect_completed_within_bound(const std::string& job, const protocol::DiskProgress& at_cut,
                                     const std::string& what) {
    json j = oma::test::wait_for_job(*api, job, oma::test::job_ended, std::chrono::seconds(240));
    ASSERT_EQ(j["status"], "completed") << j.dump(2);
    EXPECT_EQ(j["bytes_done"], j["bytes_total"]);
    for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();

    protocol::JobProgress p = client->progress(job);
    const protocol::DiskProgress* done = nullptr;
    for (const auto& d : p.disks) {
      EXPECT_FALSE(d.restarted.has_value()) << *d.restarted;
      if (d.disk_key == at_cut.disk_key) done = &d;
    }
    ASSERT_NE(done, nullptr);
    ASSERT_EQ(done->status, DiskStatus::Completed);
    EXPECT_EQ(done->bytes_total, at_cut.bytes_total) << "the resumed copy planned the disk differently";
    engine::CopyOptions engine;
    const int64_t in_flight =
        static_cast<int64_t>(std::min(engine.request_size * engine.requests, engine.bytes_in_flight));
    const int64_t unflushed = static_cast<int64_t>(kOutageReadRate);  // one checkpoint interval (1 s) of reading
    const int64_t copied_after = done->bytes_done - done->bytes_resumed;
    const int64_t left = at_cut.bytes_total - at_cut.bytes_done;
    std::cout << what << ": data disk of " << done->bytes_total << " bytes planned; cut at " << at_cut.bytes_done
              << " done; resumed " << done->bytes_resumed << "; copied after the cut " << copied_after << " ("
              << 100.0 * static_cast<double>(copied_after) / static_cast<double>(done->bytes_total)
              << " % of the disk; bound " << left + in_flight + unflushed << " = rest " << left << " + in flight "
              << in_flight << " + one checkpoint interval " << unflushed << ")\n";
    std::string vma_log = mk::test::read_file(vma->log_path());
    auto count = [&](const std::string& text) {
      int n = 0;
      for (size_t at = vma_log.find(text); at != std::string::npos; at = vma_log.find(text, at + 1)) ++n;
      return n;
    };
    std::cout << what << ": the VMA's log: " << count("resuming it from its checkpoint in") << " resume(s) waited for, "
              << count("no longer serves") << " reader(s) restarted, " << count("completed after") << " disk(s) "
              << "completed after resuming\n";
    for (const char* line : {"no longer serves", "its reader was restarted"}) {
      if (size_t at = vma_log.find(line); at != std::string::npos) {
        size_t from = vma_log.rfind('\n', at);
        std::cout << what << ": " << vma_log.substr(from + 1, vma_log.find('\n', at) - from - 1) << "\n";
      }
    }
    EXPECT_GE(count("completed after"), 1) << "the VMA's log does not say a disk completed after resuming";
    EXPECT_GT(done->bytes_resumed, 0) << "nothing was resumed";
    EXPECT_LE(copied_after, left + in_flight + unflushed) << "more than the rest plus one window was copied again";
    int notes = 0;
    for (const auto& e : j["events"]) notes += e.value("message", "").find("resumed: ") != std::string::npos;
    EXPECT_GE(notes, 1) << "the job's log does not say the disk resumed: " << j["events"].dump(2);
    EXPECT_EQ(expect_volumes_match_sources(*api, vm.instance_uuid), 2);
    expect_no_snapshot_left(vm);
    EXPECT_TRUE(std::filesystem::is_empty(dir.file("vma/state/checkpoints"))) << "a completed pass left checkpoints";
    EXPECT_EQ(mk::test::read_file(vma->log_path()).find("restarted during this pass"), std::string::npos)
        << "the VMA restarted";
  }

  // The pass of a tunnel cut completed: every disk committed and identical to its source,
  // and the data disk (`at_cut` when it was cut) wrote after the cut at most what was left
  // plus one window per connection, by the VMA's count of the run that completed it.
  // `resume`: whether it must have resumed from its checkpoint (the tunnel stayed away
  // longer than the engine's own reconnection attempts) or reconnected by itself.
  void expect_tunnel_cut_completed(const std::string& job, const protocol::DiskProgress& at_cut, bool resume,
                                   const std::string& what) {
    json j = oma::test::wait_for_job(*api, job, oma::test::job_ended, std::chrono::seconds(240));
    ASSERT_EQ(j["status"], "completed") << j.dump(2);
    EXPECT_EQ(j["bytes_done"], j["bytes_total"]);
    for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();
    const protocol::DiskProgress* done = nullptr;
    protocol::JobProgress p = client->progress(job);
    for (const auto& d : p.disks) {
      EXPECT_FALSE(d.restarted.has_value()) << *d.restarted;
      if (d.disk_key == at_cut.disk_key) done = &d;
    }
    ASSERT_NE(done, nullptr);
    ASSERT_EQ(done->status, DiskStatus::Completed);
    EXPECT_EQ(done->bytes_total, at_cut.bytes_total) << "the copy planned the disk differently after the cut";

    std::string vma_log = mk::test::read_file(vma->log_path());
    CopiedLine last = copied_line(vma_log, job, at_cut.disk_key.str());
    ASSERT_GE(last.written, 0) << "the VMA's log does not say what the data disk's copy wrote";
    int resumes = 0;
    for (size_t at = vma_log.find("resuming it from its checkpoint in"); at != std::string::npos;
         at = vma_log.find("resuming it from its checkpoint in", at + 1))
      ++resumes;
    // The cut reached the copy: its connections were reopened, or it resumed from its checkpoint.
    EXPECT_GT(last.reconnections + resumes, 0) << "the data disk's copy never noticed the tunnel was cut";
    const bool resumed = done->bytes_resumed > 0;
    const int64_t run = last.written + last.zeroed;
    const int64_t copied_after = resumed ? run : run - at_cut.bytes_done;
    engine::CopyOptions engine;
    const int64_t window = static_cast<int64_t>(std::min(engine.request_size * engine.requests, engine.bytes_in_flight)) *
                           std::max(last.connections, 1);
    const int64_t unflushed = static_cast<int64_t>(kTunnelReadRate);  // one checkpoint interval (1 s) of reading
    const int64_t left = at_cut.bytes_total - at_cut.bytes_done;
    std::cout << what << ": data disk of " << done->bytes_total << " bytes over " << last.connections
              << " NBD connection(s) through the forward; cut at " << at_cut.bytes_done << " done; "
              << last.reconnections << " reconnection(s) in the run that completed it, " << resumes
              << " resume(s) from the checkpoint (" << done->bytes_resumed << " bytes resumed); written after the cut "
              << copied_after << " (bound " << left + window + unflushed << " = rest " << left << " + in flight "
              << window << " + one checkpoint interval " << unflushed << ")\n";
    EXPECT_LE(copied_after, left + window + unflushed) << "more than the rest plus one window was copied again";
    EXPECT_EQ(expect_volumes_match_sources(*api, vm.instance_uuid), 2);
    expect_no_snapshot_left(vm);
    EXPECT_TRUE(std::filesystem::is_empty(dir.file("vma/state/checkpoints"))) << "a completed pass left checkpoints";
    EXPECT_EQ(vma_log.find("restarted during this pass"), std::string::npos) << "the VMA restarted";
    if (resume) {
      EXPECT_GT(done->bytes_resumed, 0) << "the data disk did not resume from its checkpoint";
      EXPECT_NE(vma_log.find("completed after"), std::string::npos) << "the VMA's log does not say a disk resumed";
    }
  }

  vsphere::VmInfo vm;
  std::unique_ptr<OmaBinary> oma_bin;
};

TEST_F(OutageResume, ExportServerKilledAtSixtyPercentTheCopyResumesWhenItIsBackAndTheDisksAreIdentical) {
  std::string job = start_full_pass(700);
  pid_t server = export_server_pid();
  ASSERT_GT(server, 0);
  protocol::DiskProgress at_cut = data_disk_at(job, 0.6);
  // The OMA is held so that its supervisor does not start the export server again before
  // the VMA's copy gave up on its own reconnection attempts.
  oma_bin->signal(SIGSTOP);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  ASSERT_TRUE(mk::test::eventually([&] { return !process_alive(server); }, 120)) << "the export server did not die";
  expect_vma_waits_to_resume(job);
  if (HasFatalFailure()) return;
  oma_bin->signal(SIGCONT);  // its supervisor starts the export server again, on the same port

  expect_completed_within_bound(job, at_cut, "export server killed");
  EXPECT_NE(export_server_pid(), server) << "the export server was not started again";
}

TEST_F(OutageResume, OmaKilledAtSixtyPercentWithItsExportServersTheCopyResumesWhenTheOmaIsBack) {
  std::string job = start_full_pass(800);
  pid_t server = export_server_pid();
  ASSERT_GT(server, 0);
  protocol::DiskProgress at_cut = data_disk_at(job, 0.6);
  oma_bin->kill9();
  ASSERT_TRUE(mk::test::eventually([&] { return !process_alive(server); }, 120)) << "the export server outlived the OMA";
  expect_vma_waits_to_resume(job);
  if (HasFatalFailure()) return;
  EXPECT_EQ(client->progress(job).status, protocol::VmaJobStatus::Running);
  start_oma_binary("oma-2.log");  // same data directory and NBD port

  expect_completed_within_bound(job, at_cut, "OMA killed");
  json j = api->get("/api/v1/jobs/" + job).body;
  int recovered = 0;
  for (const auto& e : j["events"]) recovered += e.value("message", "").starts_with("OMA restarted: resuming");
  EXPECT_EQ(recovered, 1) << j["events"].dump(2);
}

// The pass's snapshot is removed in vSphere while the target is away: the disk cannot
// resume on it, so every disk starts over on a new snapshot, says why, and ends identical.
TEST_F(OutageResume, ASnapshotRemovedDuringTheOutageStartsEveryDiskOverAndSaysWhy) {
  std::string job = start_full_pass(900);
  pid_t server = export_server_pid();
  ASSERT_GT(server, 0);
  data_disk_at(job, 0.6);
  oma_bin->signal(SIGSTOP);
  ASSERT_EQ(::kill(server, SIGKILL), 0);
  expect_vma_waits_to_resume(job);
  if (HasFatalFailure()) return;
  auto snaps = vsphere::list_snapshots(*session, vm.ref);
  ASSERT_EQ(snaps.size(), 1u);
  std::string gone = snaps[0].ref.value;
  vsphere::remove_snapshot(*session, vm_at("DC0/vm/DC0_H0_VM0"), snaps[0].ref);
  oma_bin->signal(SIGCONT);

  json j = oma::test::wait_for_job(*api, job, oma::test::job_ended, std::chrono::seconds(240));
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();
  for (const auto& d : client->progress(job).disks) {
    ASSERT_TRUE(d.restarted.has_value()) << "disk " << d.disk_key << " does not say why it started over";
    EXPECT_NE(d.restarted->find(gone), std::string::npos) << *d.restarted;
    EXPECT_EQ(d.bytes_resumed, 0) << "disk " << d.disk_key << " resumed from a pass on another snapshot";
  }
  int notes = 0;
  for (const auto& e : j["events"]) notes += e.value("message", "").find("started over: the pass could not resume") != std::string::npos;
  EXPECT_EQ(notes, 2) << j["events"].dump(2);
  EXPECT_EQ(expect_volumes_match_sources(*api, vm.instance_uuid), 2);
  expect_no_snapshot_left(vm);
}

TEST_F(OutageResume, SshTunnelCutAtFiftyFivePercentTheCopyGoesOnThroughTheNewTunnelAndTheDisksAreIdentical) {
  std::string job = start_pass_through_the_tunnel(1000);
  protocol::DiskProgress at_cut = data_disk_at(job, 0.55);
  pid_t ssh = vma_ssh_pid();
  ASSERT_GT(ssh, 0) << "the VMA runs no ssh client";
  ASSERT_EQ(::kill(ssh, SIGKILL), 0);
  expect_ssh_started_again(ssh);
  if (HasFatalFailure()) return;

  expect_tunnel_cut_completed(job, at_cut, /*resume=*/false, "ssh killed");
}

// The tunnel stays away longer than the engine's own reconnection attempts: the OMA's
// sshd is stopped (by PID, with its sessions: the VMA's ssh loses its connection) at 55 %
// of the data disk and started again on the same port once the VMA's copy gave up
// reconnecting and waits to resume; the supervisor's ssh gets in again and the disk
// resumes from its checkpoint through the new tunnel.
TEST_F(OutageResume, SshTunnelAwayLongerThanTheEnginesReconnectionsTheDiskResumesFromItsCheckpoint) {
  std::string job = start_pass_through_the_tunnel(1100);
  protocol::DiskProgress at_cut = data_disk_at(job, 0.55);
  pid_t ssh = vma_ssh_pid();
  ASSERT_GT(ssh, 0) << "the VMA runs no ssh client";
  sshd->stop();
  expect_vma_waits_to_resume(job);
  if (HasFatalFailure()) return;
  sshd->restart();  // same port, host key and authorized keys
  expect_ssh_started_again(ssh);
  if (HasFatalFailure()) return;

  expect_tunnel_cut_completed(job, at_cut, /*resume=*/true, "sshd stopped");
}

}  // namespace
}  // namespace mk::vma::test
