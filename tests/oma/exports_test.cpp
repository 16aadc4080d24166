// The nbdkit export manager against a real nbdkit (dir= mode, TLS PSK): exports appear
// without the server's PID ever changing, even while a copy runs through another one;
// a dead server is restarted with its exports intact; a wrong-sized export is refused;
// 8 VMs x 2 disks at once get 16 distinct volumes and exports.
#include <gtest/gtest.h>
#include <signal.h>

#include <set>
#include <thread>

#include <fmt/format.h>

#include "common/units.h"
#include "oma/errors.h"
#include "oma/names.h"
#include "oma_fixture.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "oma_service.h"

namespace mk::oma {
namespace {

using mk::test::files_identical;


void add_vm(VmRepository& vms, const std::string& id, int disks, int64_t capacity) {
  VmRecord v;
  v.vm_id = id;
  v.name = "vm-" + id.substr(32);
  v.vcenter = "vc";
  v.datacenter = "dc";
  v.guest_os = "linux";
  v.power_state = protocol::PowerState::PoweredOn;
  std::vector<DiskRecord> d;
  for (int i = 0; i < disks; ++i) {
    DiskRecord r;
    r.vm_id = id;
    r.disk_key = std::to_string(2000 + i);
    r.unit = i;
    r.label = "disk";
    r.capacity_bytes = capacity + i * 65536;
    d.push_back(r);
  }
  vms.add_vm(v, d);
}

ExportRecord provision(test::OmaFixture& f, const DiskRecord& disk) {
  VolumeRecord v = f.volumes.ensure_volume(disk);
  ExportRecord e = f.exports->ensure_export(disk, v);
  f.exports->verify(e, static_cast<uint64_t>(v.size_bytes));
  return e;
}

TEST(Exports, TwentyExportsAppearWhileACopyRunsAndTheServerNeverRestarts) {
  test::OmaFixture f;
  const uint64_t size = 16 * MiB;
  std::string src_img = f.dir.file("source.img");
  mk::test::create_sparse_file(src_img, size);
  mk::test::write_random_at(src_img, 0, 6 * MiB, 1);
  mk::test::write_random_at(src_img, 10 * MiB, 6 * MiB, 2);
  // A slow source keeps the copy running while the exports are made.
  mk::test::NbdkitServer source({.plugin = "file", .args = {"file=" + src_img, "delay-read=30ms"}, .filters = {"delay"}});

  add_vm(f.repos.vms, test::test_vm_uuid(0), 1, size);
  ExportRecord target = provision(f, f.repos.vms.list_disks(test::test_vm_uuid(0))[0]);
  pid_t pid = f.server->server_pid();

  auto ep = f.server->endpoint(target.export_name);
  Subprocess copy = mk::test::start_migratekit({"copy", source.uri(), ep.uri, "--target-tls-psk", f.psk,
                                                "--request-size", "512K", "--requests", "2", "-q"},
                                               f.dir.file("copy.out"), f.dir.file("copy.err"));
  std::set<std::string> names;
  for (int i = 1; i <= 20; ++i) {
    add_vm(f.repos.vms, test::test_vm_uuid(i), 1, 1 * MiB);
    names.insert(provision(f, f.repos.vms.list_disks(test::test_vm_uuid(i))[0]).export_name);
  }
  int status = copy.wait();
  EXPECT_EQ(status, 0) << mk::test::log_tail(f.dir.file("copy.err"));
  EXPECT_EQ(names.size(), 20u);
  EXPECT_EQ(f.server->server_pid(), pid);
  EXPECT_EQ(f.server->restarts(), 0);
  EXPECT_EQ(::kill(pid, 0), 0);
  EXPECT_TRUE(files_identical(src_img, f.repos.storage.find_volume(test::test_vm_uuid(0), "2000")->device_path));
  EXPECT_EQ(f.repos.storage.count_exports(), 21);
}

TEST(Exports, ReusedForEveryLaterJobOfTheSameDisk) {
  test::OmaFixture f;
  add_vm(f.repos.vms, test::test_vm_uuid(1), 2, 1 * MiB);
  auto disks = f.repos.vms.list_disks(test::test_vm_uuid(1));
  ExportRecord a = provision(f, disks[1]);
  ExportRecord b = provision(f, disks[1]);
  EXPECT_EQ(a.export_name, b.export_name);
  EXPECT_EQ(a.volume_id, b.volume_id);
  EXPECT_EQ(a.export_name, export_name(test::test_vm_uuid(1), 1));
  EXPECT_EQ(f.repos.storage.list_volumes().size(), 1u);
}

TEST(Exports, SupervisorRestartsADeadServerAndExportsSurvive) {
  test::OmaFixture f;
  add_vm(f.repos.vms, test::test_vm_uuid(1), 1, 1 * MiB);
  ExportRecord e = provision(f, f.repos.vms.list_disks(test::test_vm_uuid(1))[0]);
  pid_t first = f.server->server_pid();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  // Wait (bounded) for the supervisor; then the same export answers with the right size.
  for (int i = 0; i < 300 && (f.server->restarts() == 0); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_EQ(f.server->restarts(), 1);
  EXPECT_NE(f.server->server_pid(), first);
  EXPECT_NO_THROW(f.exports->verify(e, 1 * MiB));
}

// Seen in make test: nbdkit died during a pass's export check and its supervisor
// restarted it 130 ms later, but the pass had already failed ("does not answer").
TEST(Exports, VerifyRightAfterTheServerDiedWaitsForItsRestart) {
  test::OmaFixture f;
  add_vm(f.repos.vms, test::test_vm_uuid(1), 1, 1 * MiB);
  ExportRecord e = provision(f, f.repos.vms.list_disks(test::test_vm_uuid(1))[0]);
  pid_t first = f.server->server_pid();
  ASSERT_EQ(::kill(first, SIGKILL), 0);
  while (::kill(first, 0) == 0 && f.server->restarts() == 0) std::this_thread::yield();  // gone, not yet back
  EXPECT_NO_THROW(f.exports->verify(e, 1 * MiB));
  EXPECT_EQ(f.server->restarts(), 1);
}

TEST(Exports, VerifyRefusesAnExportOfTheWrongSize) {
  test::OmaFixture f;
  add_vm(f.repos.vms, test::test_vm_uuid(1), 1, 1 * MiB);
  ExportRecord e = provision(f, f.repos.vms.list_disks(test::test_vm_uuid(1))[0]);
  try {
    f.exports->verify(e, 2 * MiB);
    FAIL() << "a wrong-sized export passed verification";
  } catch (const Error& ex) {
    EXPECT_NE(std::string(ex.what()).find(e.export_name), std::string::npos) << ex.what();
  }
}

TEST(Exports, RefusesToExportAnotherDisksVolume) {
  test::OmaFixture f;
  add_vm(f.repos.vms, test::test_vm_uuid(1), 2, 1 * MiB);
  auto disks = f.repos.vms.list_disks(test::test_vm_uuid(1));
  VolumeRecord v0 = f.volumes.ensure_volume(disks[0]);
  EXPECT_THROW(f.exports->ensure_export(disks[1], v0), Error);
  EXPECT_THROW(f.server->publish("../etc/evil", "/tmp/x"), UsageError);
}

TEST(Exports, EightVmsTimesTwoDisksAtOnceGetSixteenDistinctExportsAndVolumes) {
  test::OmaFixture f;
  for (int i = 0; i < 8; ++i) add_vm(f.repos.vms, test::test_vm_uuid(100 + i), 2, 1 * MiB);
  std::vector<std::thread> threads;
  std::mutex mu;
  std::vector<ExportRecord> made;
  std::vector<std::string> errors;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      try {
        for (const auto& d : f.repos.vms.list_disks(test::test_vm_uuid(100 + i))) {
          ExportRecord e = provision(f, d);
          std::lock_guard lock(mu);
          made.push_back(e);
        }
      } catch (const std::exception& e) {
        std::lock_guard lock(mu);
        errors.push_back(e.what());
      }
    });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(errors.empty()) << errors[0];
  std::set<std::string> names, volumes, devices;
  for (const auto& e : made) {
    names.insert(e.export_name);
    volumes.insert(e.volume_id);
    devices.insert(e.device_path);
  }
  EXPECT_EQ(names.size(), 16u);
  EXPECT_EQ(volumes.size(), 16u);
  EXPECT_EQ(devices.size(), 16u);
  for (int i = 0; i < 8; ++i) {
    for (const auto& d : f.repos.vms.list_disks(test::test_vm_uuid(100 + i))) {
      EXPECT_EQ(d.export_name.value_or(""), export_name(test::test_vm_uuid(100 + i), d.unit));
    }
  }
}

}  // namespace
}  // namespace mk::oma
