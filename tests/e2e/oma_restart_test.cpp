// Issue 6's end-to-end requirement: the OMA (the real binary, --keep-export-server)
// SIGKILLed mid-copy and started again on the same data directory while the real VMA
// copies a VM with two data disks (256 MiB, 128 MiB) and a small boot disk from vcsim's flat files into its exports. The copy is not
// interrupted (bytes keep moving while the OMA is down), the restarted OMA adopts the
// same nbdkit and completes the job, every target equals its source by sha256, and an
// incremental pass after it does too — with the export server's PID unchanged from
// start to end.
#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "oma/exports/nbdkit_server.h"
#include "oma_binary.h"
#include "vma_fixture.h"

namespace mk::vma::test {
namespace {

using nlohmann::json;
using protocol::DiskStatus;

uint64_t bytes_done(const protocol::JobProgress& p) {
  uint64_t n = 0;
  for (const auto& d : p.disks) n += d.bytes_done;
  return n;
}

// The VMA's rates follow from the figures they come with: a copying disk's ETA is what
// it has left at its throughput (both from one engine snapshot; ProgressSnapshot), a disk
// not copying has none, and the job's throughput is the sum of its copying disks'.
void expect_rates_follow_from_bytes(const protocol::JobProgress& p) {
  double copying = 0;
  for (const auto& d : p.disks) {
    std::string disk = d.disk_key.str();
    if (d.status != DiskStatus::Copying || d.throughput_bps == 0) {
      EXPECT_EQ(d.eta_seconds, 0.0) << "disk " << disk;
    } else {
      double left = static_cast<double>(std::max<int64_t>(0, d.bytes_total - d.bytes_done));
      EXPECT_DOUBLE_EQ(d.eta_seconds, left / d.throughput_bps)
          << "disk " << disk << ": " << d.bytes_done << " of " << d.bytes_total << " at " << d.throughput_bps;
    }
    if (d.status == DiskStatus::Copying) copying += d.throughput_bps;
  }
  EXPECT_DOUBLE_EQ(p.total.throughput_bps, copying);
}

class OmaRestart : public VmaFixture {
 protected:
  void TearDown() override {
    if (HasFailure() && oma_bin) std::cerr << "oma log:\n" << mk::test::log_tail(oma_bin->log(), 6000) << "\n";
    oma_bin.reset();
    // The kept nbdkit outlives the OMA by design: end it by its recorded PID.
    std::string record = oma::kept_server_record_path(dir.file("oma"));
    if (std::filesystem::exists(record)) oma::stop_kept_export_server(record);
    VmaFixture::TearDown();
  }

  void start_oma_binary(const std::string& log) {
    oma_bin = std::make_unique<OmaBinary>(dir.file("oma"), vma->url(), token_file,
                                          OmaBinaryOptions{.keep_export_server = true});
    oma_bin->start(log);
    api = std::make_unique<oma::test::ApiClient>(oma_bin->port(), oma::test::read_admin_token(dir.file("oma")));
  }

  pid_t export_server_pid() { return api->get("/health").body.value("export_server_pid", -1); }

  std::unique_ptr<OmaBinary> oma_bin;
};

TEST_F(OmaRestart, OmaKilledMidCopyAdoptsItsExportServerAndTheJobCompletesWithIdenticalDisks) {
  // vcsim's VM has a 1 MiB boot disk; it gets two data disks of 256 MiB and 128 MiB,
  // every disk full of generated data.
  auto v = vm_at("DC0/vm/DC0_H0_VM0");
  ASSERT_EQ(v.disks.size(), 1u);
  v = mk::test::add_lab_disk(*session, v, v.disks.at(0).controller_key, "LocalDS_0", 256ull << 20, "data1");
  v = mk::test::add_lab_disk(*session, v, v.disks.at(0).controller_key, "LocalDS_0", 128ull << 20, "data2");
  ASSERT_EQ(v.disks.size(), 3u);
  uint64_t seed = 900;
  for (auto& d : v.disks) {
    std::string flat = lab.flat_file(d.file_name);
    mk::test::fill_generated_disk(flat, d.capacity_bytes, seed++);
    flats[v.instance_uuid][d.key] = flat;
  }
  start_vma({.read_rate = "4M"});  // ~49 MiB of data: the copy lasts long enough to kill the OMA in it
  start_oma_binary(dir.file("oma-1.log"));
  register_vm(v.instance_uuid);
  pid_t server = export_server_pid();
  ASSERT_GT(server, 0);

  std::string job = start_job(v.instance_uuid, "full");
  protocol::JobProgress p = wait_vma(job, [](const protocol::JobProgress& p) {
    for (const auto& d : p.disks) {
      if (d.status == DiskStatus::Copying && d.bytes_done > 0 && d.bytes_done < d.bytes_total) return true;
    }
    return false;
  });
  uint64_t before = bytes_done(p);
  ASSERT_GT(before, 0u) << "the copy never started";
  expect_rates_follow_from_bytes(p);
  oma_bin->kill9();

  // The OMA is down; its export server is not, and the VMA keeps copying into it.
  EXPECT_TRUE(process_alive(server)) << "the kept export server died with the OMA";
  p = wait_vma(job, [before](const protocol::JobProgress& p) { return bytes_done(p) > before; });
  EXPECT_GT(bytes_done(p), before) << "bytes stopped moving while the OMA was down";
  expect_rates_follow_from_bytes(p);
  std::cout << "OMA killed at " << before << " bytes copied; " << bytes_done(p) << " while it was down; export server pid "
            << server << "\n";
  for (const auto& d : p.disks) EXPECT_NE(d.status, DiskStatus::Failed) << d.error.value_or("");

  oma_bin->start(oma_bin->log());
  api = std::make_unique<oma::test::ApiClient>(oma_bin->port(), oma::test::read_admin_token(dir.file("oma")));
  EXPECT_EQ(export_server_pid(), server) << "the restarted OMA did not adopt its export server";
  EXPECT_NE(mk::test::read_file(oma_bin->log()).find("adopted the running export server"), std::string::npos);

  json j = wait_job(job);
  ASSERT_EQ(j["status"], "completed") << j.dump(2);
  EXPECT_EQ(j["bytes_done"], j["bytes_total"]);
  for (const auto& d : j["disks"]) EXPECT_TRUE(d["committed"].get<bool>()) << d.dump();
  // The restarted OMA resumed polling the same VMA job and committed its change IDs
  // once: the ones the VMA reports for this pass.
  int resumed = 0, commits = 0;
  for (const auto& e : j["events"]) {
    std::string m = e.value("message", "");
    resumed += m.starts_with("OMA restarted: resuming");
    commits += m.find("change ID committed") != std::string::npos;
  }
  EXPECT_EQ(resumed, 1) << j["events"].dump(2);
  EXPECT_EQ(commits, 1) << j["events"].dump(2);
  std::map<std::string, std::string> vma_ids;
  for (const auto& d : client->progress(job).disks) vma_ids[d.disk_key.str()] = d.change_id.value_or("");
  auto disks = api->get("/api/v1/vms/" + v.instance_uuid + "/disks");
  ASSERT_EQ(disks.body["disks"].size(), 3u) << disks.raw;
  for (const auto& d : disks.body["disks"]) {
    ASSERT_TRUE(d["change_id"].is_string()) << d.dump();
    EXPECT_EQ(d["change_id"].get<std::string>(), vma_ids[d["key"].get<std::string>()]) << d.dump();
    EXPECT_FALSE(d["change_id"].get<std::string>().empty());
  }
  std::cout << "full pass: " << j["bytes_done"] << " of " << j["bytes_total"] << " bytes\n";
  EXPECT_EQ(expect_volumes_match_sources(*api, v.instance_uuid), 3);
  expect_no_snapshot_left(v);
  EXPECT_EQ(export_server_pid(), server);

  // Changes written into every flat file, then an incremental pass from the committed
  // IDs: it moves exactly the blocks written (64 KiB each, the shim's change-tracking
  // granularity and scribble's block; a block written twice moves once), no more, no less.
  uint64_t changed = 0;
  std::map<std::string, uint64_t> changed_by_disk;
  for (auto& [key, flat] : flats.at(v.instance_uuid)) {
    uint64_t n = mk::test::scribble(flat, mk::test::file_size(flat), 24, seed++).size() * kBlock;
    changed_by_disk[std::to_string(key)] = n;
    changed += n;
  }
  json j2 = wait_job(start_job(v.instance_uuid, "incremental"));
  ASSERT_EQ(j2["status"], "completed") << j2.dump(2);
  std::cout << "incremental pass: " << j2["bytes_done"] << " bytes; " << changed << " bytes written\n";
  EXPECT_EQ(j2["bytes_done"].get<uint64_t>(), changed) << "an incremental pass moves what changed, all of it";
  EXPECT_EQ(j2["bytes_total"].get<uint64_t>(), changed);
  for (const auto& d : j2["disks"]) {
    EXPECT_EQ(d["bytes_done"].get<uint64_t>(), changed_by_disk[d["disk_key"].get<std::string>()]) << d.dump();
  }
  EXPECT_EQ(expect_volumes_match_sources(*api, v.instance_uuid), 3);
  EXPECT_EQ(export_server_pid(), server) << "the export server's PID changed";

  // A clean stop leaves it running too; --stop-export-server ends it by its PID.
  EXPECT_EQ(oma_bin->terminate(), 0);
  EXPECT_TRUE(process_alive(server));
  std::string out;
  EXPECT_EQ(run_capture({OMA_BIN, "--data-dir", dir.file("oma"), "--stop-export-server"}, out), 0);
  EXPECT_NE(out.find("stopped the export server (pid " + std::to_string(server) + ")"), std::string::npos) << out;
  for (int i = 0; i < 500 && process_alive(server); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_FALSE(process_alive(server));
}

}  // namespace
}  // namespace mk::vma::test
