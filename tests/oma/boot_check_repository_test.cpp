// BootCheckRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h):
// one last boot check per VM, replaced by the next, its screenshot read only when asked
// for and large enough to need more than a TEXT column on MariaDB.
#include <gtest/gtest.h>

#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

void OneLastBootCheckPerVmWithItsScreenshot(db::Database&, Repositories& r) {
  r.vms.add_vm(vm_record(kVm1), disk_records(1));
  EXPECT_FALSE(r.boot_checks.find(kVm1));
  BootCheckRecord b;
  b.vm_id = kVm1;
  b.job_id = "job-1";
  b.started_by = "api";
  b.booted = false;
  b.reason = "the guest did not boot: 0 journal entries since the boot started";
  b.inspection_seconds = 20.5;
  b.conversion_seconds = 87.25;
  b.boot_seconds = 31.5;
  b.console_tail = "Begin: Mounting root file system … ALERT!  UUID=… does not exist.\n(initramfs) ";
  b.details = R"({"result":{"accel":"tcg"}})";
  b.started_at = 1000;
  b.finished_at = 2000;
  r.boot_checks.put(b);

  b.job_id = "job-2";  // the next check replaces it
  b.booted = true;
  b.reason = "41 journal entries since the boot started; Reached target multi-user.target";
  b.screenshot_format = "png";
  b.screenshot_base64 = std::string(600 * 1024, 'A');  // over MariaDB's 64 KiB TEXT
  b.finished_at = 3000;
  r.boot_checks.put(b);

  auto got = r.boot_checks.find(kVm1);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->job_id, "job-2");
  EXPECT_TRUE(got->booted);
  EXPECT_EQ(got->reason, b.reason);
  EXPECT_EQ(got->conversion_seconds, 87.25);
  EXPECT_EQ(got->console_tail, b.console_tail);
  EXPECT_EQ(got->details, b.details);
  EXPECT_EQ(got->screenshot_format, "png");
  EXPECT_TRUE(got->screenshot_base64.empty()) << "read without being asked for";
  auto with = r.boot_checks.find(kVm1, true);
  ASSERT_TRUE(with);
  EXPECT_EQ(with->screenshot_base64, b.screenshot_base64);
  auto all = r.boot_checks.all();
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all.at(kVm1).finished_at, 3000);
}

}  // namespace

Scenarios boot_check_repository_scenarios() {
  return {{"OneLastBootCheckPerVmWithItsScreenshot", OneLastBootCheckPerVmWithItsScreenshot}};
}

}  // namespace mk::oma::test
