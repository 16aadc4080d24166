// The OMA's statuses, kinds and roles: each enum names every value once, and the names
// are the strings already stored in databases and shown by the API (a rename would
// need a migration and an API change, so it must fail here first).
#include <gtest/gtest.h>

#include "oma/db/repositories.h"

namespace mk::oma {
namespace {

// Every value from the first to `last` has exactly the name listed, in order.
template <typename E>
void expect_names(E last, const std::vector<std::string>& names) {
  const auto& table = enum_table(E{});
  ASSERT_EQ(table.entries.size(), static_cast<size_t>(last) + 1) << table.what << ": a value has no name";
  EXPECT_EQ(enum_names<E>(), names) << table.what;
  for (size_t i = 0; i < names.size(); ++i) {
    E e = static_cast<E>(i);
    EXPECT_EQ(enum_name(e), names[i]);
    EXPECT_EQ(find_enum<E>(names[i]), e);
    EXPECT_EQ(nlohmann::json(e), names[i]);
    EXPECT_EQ(fmt::format("{}", e), names[i]);
  }
  EXPECT_FALSE(find_enum<E>(""));
  EXPECT_FALSE(find_enum<E>(names[0] + "x"));
}

TEST(OmaEnums, NamesAreTheStoredStrings) {
  expect_names(VmStatus::Inspecting,
               {"discovered", "replicating", "replicated", "replication_failed", "replication_cancelled",
                "cutting_over", "cut_over", "cutover_failed", "cutover_interrupted", "test_failover_starting",
                "test_failover", "test_failover_interrupted", "test_failover_cleanup_interrupted",
                "boot_checking", "inspecting"});
  expect_names(FailoverKind::TestFailover, {"cutover", "test_failover"});
  expect_names(JobKind::Inspection, {"full", "incremental", "cutover", "test_failover", "test_failover_cleanup",
                                     "boot_check", "inspection"});
  expect_names(JobStatus::Unknown, {"preparing", "exporting", "copying", "committing", "running", "completed", "failed",
                                    "cancelled", "cancelling", "unknown"});
  expect_names(StepStatus::Skipped, {"running", "completed", "failed", "skipped"});
  expect_names(EventLevel::Error, {"info", "warn", "error"});
  expect_names(VolumeStatus::Ready, {"ready"});
  expect_names(TokenRole::Viewer, {"admin", "operator", "viewer"});
  expect_names(VmaState::Revoked, {"pending", "approved", "revoked"});
}

TEST(OmaEnums, PredicatesOverStatusesAndKinds) {
  for (auto s : {JobStatus::Completed, JobStatus::Failed, JobStatus::Cancelled})
    EXPECT_TRUE(is_terminal(s)) << enum_name(s);
  // Cancelling and unknown hold the VM until no writer is left: not ended.
  for (auto s : {JobStatus::Preparing, JobStatus::Exporting, JobStatus::Copying, JobStatus::Committing,
                 JobStatus::Running, JobStatus::Cancelling, JobStatus::Unknown})
    EXPECT_FALSE(is_terminal(s)) << enum_name(s);
  EXPECT_TRUE(is_pass(JobKind::Full));
  EXPECT_TRUE(is_pass(JobKind::Incremental));
  for (auto k : {JobKind::Cutover, JobKind::TestFailover, JobKind::TestFailoverCleanup, JobKind::BootCheck,
                 JobKind::Inspection})
    EXPECT_FALSE(is_pass(k)) << enum_name(k);
}

}  // namespace
}  // namespace mk::oma
