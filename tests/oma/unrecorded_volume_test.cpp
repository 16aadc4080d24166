// A local volume file created just before the OMA stopped and never recorded (issue 16:
// recovery "with a volume created but not recorded"): the next start removes it, keeps
// every recorded volume, and never touches a file the OMA did not make. Real SQLite, real
// files, and the real `oma` binary for the start.
#include <gtest/gtest.h>

#include <filesystem>

#include "fake_vma.h"
#include "oma/db/migrations.h"
#include "oma/db/repositories.h"
#include "oma/db/sqlite_database.h"
#include "oma/names.h"
#include "oma/volumes/volume_manager.h"
#include "oma_process.h"
#include "repository_scenarios.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

namespace fs = std::filesystem;

struct Volumes {
  mk::test::TempDir dir{"mk-oma-unrecorded"};
  std::unique_ptr<db::Database> database = db::open_database("sqlite:" + dir.file("oma.db"));
  Repositories repos{(db::migrate(*database), *database)};
  std::string volumes_dir = dir.file("volumes");
  LocalVolumeBackend backend{volumes_dir};
  VolumeManager volumes{repos.storage, backend};

  // The names in the volumes directory, sorted.
  std::vector<std::string> files() const {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(volumes_dir)) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
};

// What a crash between the backend's create() and the database row leaves on disk.
CreatedVolume crash_after_create(Volumes& v, uint64_t size) {
  return v.backend.create({new_uuid(), kVm1, "2000", size});
}

TEST(UnrecordedVolume, AFileCreatedButNeverRecordedIsRemovedAndTheDiskGetsOneVolume) {
  Volumes v;
  v.repos.vms.add_vm(vm_record(kVm1), disk_records(1));
  CreatedVolume lost = crash_after_create(v, 1 << 20);
  ASSERT_TRUE(fs::exists(lost.device_path));

  EXPECT_EQ(v.volumes.remove_unrecorded(), 1);
  EXPECT_FALSE(fs::exists(lost.device_path));
  EXPECT_TRUE(v.files().empty()) << "left: " << fmt::format("{}", fmt::join(v.files(), ", "));

  VolumeRecord made = v.volumes.ensure_volume(v.repos.vms.list_disks(kVm1).at(0));
  EXPECT_EQ(v.files(), std::vector<std::string>{"vol-" + made.volume_id + ".img"})
      << "a recorded volume keeps no creation marker";
  EXPECT_EQ(v.volumes.remove_unrecorded(), 0);
  EXPECT_TRUE(fs::exists(made.device_path));
}

TEST(UnrecordedVolume, ARecordedVolumeWhoseMarkerOutlivedACrashIsKept) {
  Volumes v;
  v.repos.vms.add_vm(vm_record(kVm1), disk_records(1));
  VolumeRecord made = v.volumes.ensure_volume(v.repos.vms.list_disks(kVm1).at(0));
  // The crash came after the row, before the marker went.
  mk::test::write_at(v.volumes_dir + "/vol-" + made.volume_id + ".creating", 0, "");

  EXPECT_EQ(v.volumes.remove_unrecorded(), 0);
  EXPECT_EQ(v.files(), std::vector<std::string>{"vol-" + made.volume_id + ".img"});
  auto again = v.volumes.ensure_volume(v.repos.vms.list_disks(kVm1).at(0));
  EXPECT_EQ(again.volume_id, made.volume_id);
}

TEST(UnrecordedVolume, AFileTheOmaDidNotMarkIsNeverTouched) {
  Volumes v;
  std::string foreign = v.volumes_dir + "/vol-" + new_uuid() + ".img";  // no marker: not ours to judge
  mk::test::write_at(foreign, 0, "operator's data");
  EXPECT_EQ(v.volumes.remove_unrecorded(), 0);
  EXPECT_EQ(mk::test::read_file(foreign), "operator's data");
}

TEST(UnrecordedVolume, TheOmaRemovesItAtStartAndSaysSo) {
  mk::test::TempDir dir{"mk-oma-unrecorded-start"};
  std::string data = dir.file("data");
  FakeVma vma{mk::test::make_psk_file(dir.file("vma.psk"), "oma")};
  { OmaProcess first{data, vma.url(), dir.file("first.log")}; }  // makes the data directory
  LocalVolumeBackend backend{data + "/volumes"};
  CreatedVolume lost = backend.create({new_uuid(), kVm1, "2000", 1 << 20});

  OmaProcess oma{data, vma.url(), dir.file("oma.log")};
  EXPECT_FALSE(fs::exists(lost.device_path));
  EXPECT_FALSE(fs::exists(data + "/volumes/vol-" + lost.volume_id + ".creating"));
  std::string log = mk::test::read_file(dir.file("oma.log"));
  EXPECT_NE(log.find("volume " + lost.volume_id + " at " + lost.device_path + ": it was created just before the OMA "
                     "stopped and never recorded"),
            std::string::npos)
      << log;
}

}  // namespace
}  // namespace mk::oma::test
