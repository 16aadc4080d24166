// Guest inspection, conversion and boot checks against real virt-inspector,
// virt-v2v-in-place and qemu (TCG on these machines), on the lab's VMware-like Debian 12
// guest (tests/lab/guest, built once per build tree by the guest_image fixture) and on the
// same guest converted once (guest_converted fixture, by `mk-guest convert`).
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "common/error.h"
#include "common/subprocess.h"
#include "guest/accel.h"
#include "guest/boot_check.h"
#include "guest/conversion.h"
#include "guest/inspection.h"
#include "guest/overlay.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace {

using mk::guest::DiskImage;
namespace fs = std::filesystem;

std::string existing(const char* path) {
  if (!fs::exists(path)) {
    ADD_FAILURE() << path << " is missing: run through ctest (the guest_image and guest_converted fixtures)";
  }
  return path;
}

std::string lab_image() { return existing(MK_LAB_GUEST_IMAGE); }
std::string converted_image() { return existing(MK_LAB_GUEST_CONVERTED); }

// A private copy of `image` (sparse), for tests that write.
std::string copy_of(const std::string& image, const mk::test::TempDir& dir, const std::string& name) {
  const std::string out = dir.file(name);
  std::string ignored;
  EXPECT_EQ(mk::run_capture({"cp", "--sparse=always", image, out}, ignored), 0);
  return out;
}

// Files left in the scratch directories this code makes (mk-guest-*: overlays, consoles,
// domain XML, logs). libguestfs and virt-v2v keep their own temporary files next to them.
std::size_t files_in(const std::string& dir) {
  std::size_t n = 0;
  for (auto it = fs::recursive_directory_iterator(dir); it != fs::recursive_directory_iterator(); ++it) {
    const std::string top = fs::relative(it->path(), dir).begin()->string();
    if (it->is_regular_file() && top.rfind("mk-guest-", 0) == 0) ++n;
  }
  return n;
}

// Live processes whose command line names `dir` (a zombie's is empty).
std::size_t processes_naming(const std::string& dir) {
  std::size_t n = 0;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(getpid())) continue;
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    const std::string cmd((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (cmd.find(dir) != std::string::npos) ++n;
  }
  return n;
}

// Scratch files (overlays, consoles) go under a directory the test owns, so it can see
// that they are gone afterwards.
class GuestTest : public ::testing::Test {
 protected:
  void SetUp() override { ::setenv("TMPDIR", scratch_.path().c_str(), 1); }
  // The next test's directories are made under $TMPDIR before its SetUp: not under this
  // test's scratch directory, which is gone by then (several tests in one process).
  void TearDown() override { ::unsetenv("TMPDIR"); }
  mk::test::TempDir scratch_{"mk-guest-scratch"};
  mk::test::TempDir work_{"mk-guest-work"};
};

TEST_F(GuestTest, InspectsTheLabGuestReadOnly) {
  const std::string image = lab_image();
  const std::string before = mk::test::sha256_file(image);
  const auto g = mk::guest::inspect_guest({{image, "raw"}});
  EXPECT_TRUE(g.os_found);
  EXPECT_EQ(g.os_family, "linux");
  EXPECT_EQ(g.distro, "debian");
  EXPECT_EQ(g.version.substr(0, 3), "12.");
  EXPECT_EQ(g.root_device, "/dev/sda1");
  EXPECT_EQ(g.boot_disk, 0);
  EXPECT_EQ(g.firmware, "bios");
  EXPECT_TRUE(g.convertible) << g.reason;
  EXPECT_EQ(mk::test::sha256_file(image), before);
  std::cout << "inspection seconds: " << g.seconds << "\n";
}

TEST_F(GuestTest, RandomDataIsNotConvertible) {
  const std::string disk = work_.file("random.raw");
  mk::test::write_random_at(disk, 0, 64 << 20, 12);
  const auto g = mk::guest::inspect_guest({{disk, "raw"}});
  EXPECT_FALSE(g.os_found);
  EXPECT_FALSE(g.convertible);
  EXPECT_NE(g.reason.find("no operating system"), std::string::npos) << g.reason;
}

TEST_F(GuestTest, VmwareLikeGuestDoesNotBootOnVirtioUnconverted) {
  mk::guest::BootCheckOptions options;
  options.convert = false;
  options.limit = std::chrono::seconds(240);
  const auto r = mk::guest::boot_check({{lab_image(), "raw"}}, options);
  EXPECT_FALSE(r.booted) << r.reason;
  EXPECT_FALSE(r.evidence.target_reached);
  // Its initramfs has no virtio driver: it cannot find its root filesystem.
  EXPECT_NE(r.console_tail.find("does not exist"), std::string::npos) << r.console_tail;
  // A picture of the VGA console, whatever the guest did (QMP screendump; PNG from this qemu).
  EXPECT_EQ(r.screenshot_format, "png") << r.screenshot_error;
  EXPECT_EQ(r.screenshot.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(files_in(scratch_.path()), 0u);
}

// What an OMA stopping mid-check relies on: a raised cancel flag stops qemu at once,
// skips the read-back and removes the overlays.
TEST_F(GuestTest, CancelledBootCheckStopsAtOnceAndLeavesNothing) {
  std::atomic<bool> cancel{false};
  mk::guest::BootCheckOptions options;
  options.convert = false;
  options.limit = std::chrono::seconds(300);
  options.cancel = &cancel;
  std::thread canceller([&] {
    // Once qemu writes its console (it is booting), a few seconds in.
    for (int i = 0; i < 600; ++i) {
      bool console = false;
      for (auto& e : fs::recursive_directory_iterator(scratch_.path(), fs::directory_options::skip_permission_denied)) {
        std::error_code ec;
        if (e.path().filename() == "console.txt" && fs::file_size(e.path(), ec) > 0) console = true;
      }
      if (console) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    cancel = true;
  });
  const auto start = std::chrono::steady_clock::now();
  const auto r = mk::guest::boot_check({{lab_image(), "raw"}}, options);
  canceller.join();
  EXPECT_TRUE(r.cancelled) << r.reason;
  EXPECT_FALSE(r.booted);
  EXPECT_TRUE(r.evidence.detail.empty()) << "read back after the cancel: " << r.evidence.detail;
  EXPECT_EQ(files_in(scratch_.path()), 0u);
  std::cout << "cancelled boot check returned after "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() << " s\n";
}

TEST_F(GuestTest, BootCheckConvertsOverlaysBootsAndNeverChangesTheReplica) {
  const std::string image = lab_image();
  const std::string before = mk::test::sha256_file(image);
  mk::guest::BootCheckOptions options;
  options.limit = std::chrono::seconds(300);
  const auto r = mk::guest::boot_check({{image, "raw"}}, options);
  EXPECT_TRUE(r.converted) << r.reason;
  EXPECT_TRUE(r.booted) << r.reason << "\n" << r.console_tail;
  EXPECT_TRUE(r.evidence.journal_written);
  EXPECT_NE(r.console_tail.find("MK-GUEST-BOOTED"), std::string::npos);
  EXPECT_EQ(mk::test::sha256_file(image), before);
  EXPECT_EQ(files_in(scratch_.path()), 0u);
  std::cout << "boot check: conversion " << r.conversion_seconds << " s, boot " << r.seconds << " s ("
            << r.accel << ")\n";
}

TEST_F(GuestTest, ConversionFailingMidwayLeavesVolumesByteIdentical) {
  const std::string root = copy_of(lab_image(), work_, "root.raw");
  const std::string data = work_.file("data.raw");
  mk::test::write_random_at(data, 0, 16 << 20, 7);
  const std::string root_before = mk::test::sha256_file(root);
  const std::string data_before = mk::test::sha256_file(data);
  // Fail it once virt-v2v-in-place has written into the overlays: mid-way, for real.
  std::atomic<bool> cancel{false};
  std::atomic<bool> done{false};
  bool saw_writes = false;
  std::thread watcher([&] {
    while (!done) {
      for (auto& e : fs::recursive_directory_iterator(scratch_.path(), fs::directory_options::skip_permission_denied)) {
        std::error_code ec;
        if (e.path().extension() == ".qcow2" && fs::file_size(e.path(), ec) > (2u << 20)) {
          saw_writes = true;
          cancel = true;
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
  mk::guest::ConversionOptions options;
  options.cancel = &cancel;
  const auto r = mk::guest::convert_volumes({{root, "raw"}, {data, "raw"}}, options);
  done = true;
  watcher.join();
  EXPECT_TRUE(saw_writes) << "the conversion ended before writing: " << r.error;
  EXPECT_FALSE(r.ok);
  EXPECT_FALSE(r.error.empty());
  EXPECT_EQ(mk::test::sha256_file(root), root_before);
  EXPECT_EQ(mk::test::sha256_file(data), data_before);
  EXPECT_EQ(files_in(scratch_.path()), 0u);
  // virt-v2v's helpers (qemu-nbd -t on the overlays) went with it.
  EXPECT_EQ(processes_naming(scratch_.path()), 0u);
}

TEST_F(GuestTest, HangingGuestIsReportedNotBootedWithinTheLimit) {
  // The converted guest with a unit that blocks boot before the default target forever.
  const std::string overlay = work_.file("hang.qcow2");
  std::string out;
  ASSERT_EQ(mk::run_capture({"qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", converted_image(),
                             overlay}, out), 0);
  const std::string unit = work_.file("mk-hang.service");
  std::ofstream(unit) << "[Unit]\nDefaultDependencies=no\nBefore=sysinit.target\n"
                         "[Service]\nType=oneshot\nExecStart=/bin/sleep infinity\nTimeoutStartSec=infinity\n";
  mk::SpawnOptions spawn;
  spawn.env = mk::guest::libguestfs_env(mk::guest::detect_accel());
  auto fish = mk::Subprocess::spawn(
      {"guestfish", "--format=qcow2", "-a", overlay, "-i", "upload", unit, "/etc/systemd/system/mk-hang.service",
       ":", "mkdir-p", "/etc/systemd/system/sysinit.target.wants", ":", "ln-s", "../mk-hang.service",
       "/etc/systemd/system/sysinit.target.wants/mk-hang.service"},
      spawn);
  ASSERT_EQ(fish.wait(), 0);
  mk::guest::BootCheckOptions options;
  options.convert = false;
  options.limit = std::chrono::seconds(60);
  const auto r = mk::guest::boot_check({{overlay, "qcow2"}}, options);
  EXPECT_FALSE(r.booted) << r.reason;
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.evidence.target_reached);
  EXPECT_NE(r.reason.find("within 60 s"), std::string::npos) << r.reason;
  EXPECT_EQ(files_in(scratch_.path()), 0u);
}

TEST(GuestEvidence, JudgesJournalLines) {
  const auto none = mk::guest::judge_journal("-- No entries --\n");
  EXPECT_FALSE(none.journal_written);
  const auto partial = mk::guest::judge_journal(
      "2026-12-03T04:00:01+0000 h systemd[1]: Reached target local-fs.target - Local File Systems.\n");
  EXPECT_TRUE(partial.journal_written);
  EXPECT_FALSE(partial.target_reached);
  const auto up = mk::guest::judge_journal(
      "2026-12-03T04:00:01+0000 h systemd[1]: Reached target multi-user.target - Multi-User System.\n");
  EXPECT_TRUE(up.target_reached);
}

TEST(GuestInspection, NamesApplianceDisks) {
  EXPECT_EQ(mk::guest::appliance_disk_name(0), "/dev/sda");
  EXPECT_EQ(mk::guest::appliance_disk_name(25), "/dev/sdz");
  EXPECT_EQ(mk::guest::appliance_disk_name(26), "/dev/sdaa");
  EXPECT_EQ(mk::guest::appliance_disk_index("/dev/sdb2"), 1);
  EXPECT_EQ(mk::guest::appliance_disk_index("/dev/sdaa1"), 26);
  EXPECT_EQ(mk::guest::appliance_disk_index("/dev/vg0/root"), -1);
}

// A commit that fails after writing (as a full disk or an I/O error half-way would) puts
// the volume back from what was saved before; a commit that works writes the overlay's
// data and zeros. Only qemu-img and qemu-io: no image, no qemu.
TEST(GuestOverlay, ACommitThatFailsRestoresTheVolume) {
  mk::test::TempDir dir("mk-guest-overlay");
  const std::string base = dir.file("volume.raw");
  mk::test::write_random_at(base, 0, 8 << 20, 5);
  const std::string before = mk::test::sha256_file(base);
  auto written_overlay = [&](const std::string& name) {
    mk::guest::Overlay o({base, "raw"}, dir.file(name));
    std::string out;
    EXPECT_EQ(mk::run_capture({"qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 64k", "-c", "write -z 3M 128k",
                               o.path()},
                              out),
              0)
        << out;
    return o;
  };
  {
    mk::guest::Overlay o = written_overlay("failing.qcow2");
    try {
      o.commit([&] {
        EXPECT_NE(mk::test::sha256_file(base), before) << "the commit wrote nothing: the test proves nothing";
        throw mk::Error("injected: the disk filled up");
      });
      ADD_FAILURE() << "the failed commit was reported as done";
    } catch (const mk::Error& e) {
      EXPECT_NE(std::string(e.what()).find("restored to what it was"), std::string::npos) << e.what();
    }
    EXPECT_EQ(mk::test::sha256_file(base), before);
  }
  EXPECT_FALSE(fs::exists(dir.file("failing.qcow2.undo"))) << "the saved copy was left behind";
  {
    mk::guest::Overlay o = written_overlay("working.qcow2");
    o.commit();
  }
  EXPECT_EQ(mk::test::read_at(base, 1 << 20, 4), std::string(4, '\xab'));
  EXPECT_EQ(mk::test::read_at(base, 3 << 20, 4), std::string(4, '\0'));
  EXPECT_NE(mk::test::sha256_file(base), before);
}

}  // namespace
