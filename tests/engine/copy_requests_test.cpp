// What the engine sends on the wire, read from nbdkit's log filter on each server: holes
// are never read, zero blocks become write-zeroes (or nothing on a fresh target) and
// never data writes, only changed areas are touched, the server's maximum request size
// is honoured, and the target is flushed after the last write.
#include <set>

#include "copy_fixture.h"
#include "support/nbdkit_log.h"

namespace mk::test {
namespace {

using mk::KiB;
using mk::MiB;

// Fails for every request of `requests` that is not inside one of `areas`.
void expect_within(const std::vector<NbdRequest>& requests, const std::vector<Area>& areas, const char* what) {
  for (const NbdRequest& r : requests) {
    bool inside = false;
    for (const Area& a : areas) inside |= r.offset >= a.start && r.end() <= a.start + a.length;
    EXPECT_TRUE(inside) << what << " " << r.type << " [" << r.offset << ", " << r.end() << ") outside the expected areas";
  }
}

// Fails unless the union of the requests is exactly the union of `areas` (both sorted
// and non-overlapping after merging).
void expect_cover(std::vector<NbdRequest> requests, const std::vector<Area>& areas, const char* what) {
  std::sort(requests.begin(), requests.end(), [](auto& a, auto& b) { return a.offset < b.offset; });
  std::vector<Area> merged;
  for (const NbdRequest& r : requests) {
    if (!merged.empty() && merged.back().start + merged.back().length >= r.offset) {
      merged.back().length = std::max(merged.back().start + merged.back().length, r.end()) - merged.back().start;
    } else {
      merged.push_back({r.offset, r.count});
    }
  }
  ASSERT_EQ(merged.size(), areas.size()) << what;
  for (size_t i = 0; i < areas.size(); ++i) {
    EXPECT_EQ(merged[i].start, areas[i].start) << what << " area " << i;
    EXPECT_EQ(merged[i].length, areas[i].length) << what << " area " << i;
  }
}

class CopyRequests : public CopyTest {
 protected:
  // 4 MiB: random data [0, 1M), allocated zeros [1M, 2M), a hole [2M, 4M).
  void SetUp() override {
    source_ = make_disk("source.img", kSize, {{0, 1 * MiB}});
    fill_at(source_, 1 * MiB, 1 * MiB, '\0');
    target_ = file("target.img");
  }

  // Serves with the log filter (and `filters` under it); the log is file(log_name).
  NbdkitServer& serve_logged(const std::string& path, const std::string& log_name, NbdkitOptions options = {}) {
    options.filters.insert(options.filters.begin(), "log");
    options.args.push_back("logfile=" + file(log_name));
    return serve(path, std::move(options));
  }

  static constexpr uint64_t kSize = 4 * MiB;
  std::string source_, target_;
};

TEST_F(CopyRequests, ReusedTargetGetsWritesForDataAndWriteZeroesForZeros) {
  write_random_at(target_, 0, kSize, 77);
  RunResult r = copy(serve_logged(source_, "source.log").uri(), serve_logged(target_, "target.log").uri());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(files_identical(source_, target_));

  auto src = parse_nbdkit_log(file("source.log"));
  auto reads = requests_of(src, "Read");
  expect_within(reads, {{0, 2 * MiB}}, "source");  // the hole is never read
  EXPECT_EQ(total_count(reads), 2 * MiB);

  auto dst = parse_nbdkit_log(file("target.log"));
  auto writes = requests_of(dst, "Write");
  expect_within(writes, {{0, 1 * MiB}}, "target");  // zeros are never written as data
  EXPECT_EQ(total_count(writes), 1 * MiB);
  expect_cover(requests_of(dst, "Zero"), {{1 * MiB, 3 * MiB}}, "target write-zeroes");
  EXPECT_TRUE(requests_of(dst, "Read").empty()) << "the copy read the target";
}

TEST_F(CopyRequests, FreshTargetGetsOnlyTheData) {
  create_sparse_file(target_, kSize);
  RunResult r = copy(serve_logged(source_, "source.log").uri(), serve_logged(target_, "target.log").uri(),
                     {"--target-is-zero"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  ASSERT_TRUE(files_identical(source_, target_));
  auto dst = parse_nbdkit_log(file("target.log"));
  expect_cover(requests_of(dst, "Write"), {{0, 1 * MiB}}, "target writes");
  EXPECT_TRUE(requests_of(dst, "Zero").empty()) << "write-zeroes on a target known to be zero";
  expect_within(requests_of(parse_nbdkit_log(file("source.log")), "Read"), {{0, 2 * MiB}}, "source");
}

TEST_F(CopyRequests, OnlyChangedAreasAreReadAndWritten) {
  write_random_at(target_, 0, kSize, 78);
  std::vector<Area> areas{{100 * KiB, 10 * KiB}, {1 * MiB - 512, 1024}, {3 * MiB, 4096}};
  RunResult r = copy(serve_logged(source_, "source.log").uri(), serve_logged(target_, "target.log").uri(),
                     {"--changed-areas", areas_file("areas.json", areas)});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto src = parse_nbdkit_log(file("source.log"));
  // Reads: the data parts of the areas; [3M, 3M+4K) is a hole and is not read.
  expect_cover(requests_of(src, "Read"), {{100 * KiB, 10 * KiB}, {1 * MiB - 512, 1024}}, "source reads");
  auto dst = parse_nbdkit_log(file("target.log"));
  std::vector<NbdRequest> changes = requests_of(dst, "Write");
  for (const NbdRequest& z : requests_of(dst, "Zero")) changes.push_back(z);
  expect_cover(changes, areas, "target writes and write-zeroes");
  EXPECT_TRUE(requests_of(dst, "Trim").empty());
}

TEST_F(CopyRequests, ServersMaximumRequestSizeIsHonoured) {
  write_random_at(target_, 0, kSize, 79);
  // The servers refuse (EINVAL) any read or write larger than 16K.
  NbdkitOptions limited{.args = {"blocksize-maximum=16K", "blocksize-error-policy=error"},
                        .filters = {"blocksize-policy"}};
  RunResult r = copy(serve_logged(source_, "source.log", limited).uri(),
                     serve_logged(target_, "target.log", limited).uri());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source_, target_));
  for (const auto& [log, type] : {std::pair{"source.log", "Read"}, std::pair{"target.log", "Write"}}) {
    auto requests = requests_of(parse_nbdkit_log(file(log)), type);
    ASSERT_FALSE(requests.empty()) << log;
    for (const NbdRequest& q : requests) EXPECT_LE(q.count, 16 * KiB) << log << " " << type << " at " << q.offset;
  }
}

// --connections 2 opens a second connection per side only when both servers advertise
// multi-conn; otherwise every write goes through one connection.
TEST_F(CopyRequests, SecondConnectionOnlyWhenBothServersAllowMultiConn) {
  auto connects = [](const std::string& log) {
    std::string text = read_file(log);
    size_t n = 0;
    for (size_t at = 0; (at = text.find(" Connect export=", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  auto writing_connections = [](const std::string& log) {
    std::set<uint64_t> ids;
    for (const NbdRequest& w : requests_of(parse_nbdkit_log(log), "Write")) ids.insert(w.connection);
    return ids.size();
  };
  std::string target2 = file("target2.img");
  create_sparse_file(target_, kSize);
  create_sparse_file(target2, kSize);
  std::string src_uri = serve(source_).uri();
  RunResult r = copy(src_uri, serve_logged(target_, "multi.log").uri(), {"--connections", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  NbdkitOptions single{.args = {"multi-conn-mode=disable"}, .filters = {"multi-conn"}};
  r = copy(src_uri, serve_logged(target2, "single.log", single).uri(), {"--connections", "2"});
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  EXPECT_TRUE(files_identical(source_, target_));
  EXPECT_TRUE(files_identical(source_, target2));
  EXPECT_EQ(writing_connections(file("single.log")), 1u);
  // Which connections get writes depends on which worker takes work first; how many
  // connect does not: every worker connects, even one that finds no work left.
  EXPECT_LE(writing_connections(file("multi.log")), 2u);
  EXPECT_EQ(connects(file("single.log")), 1u);
  EXPECT_EQ(connects(file("multi.log")), 2u);
}

TEST_F(CopyRequests, TargetIsFlushedAfterItsLastWrite) {
  write_random_at(target_, 0, kSize, 80);
  RunResult r = copy(serve(source_).uri(), serve_logged(target_, "target.log").uri());
  ASSERT_EQ(r.exit_code, 0) << describe(r);
  auto dst = parse_nbdkit_log(file("target.log"));
  ptrdiff_t last_change = -1, last_flush = -1;
  for (size_t i = 0; i < dst.size(); ++i) {
    if (dst[i].type == "Write" || dst[i].type == "Zero") last_change = static_cast<ptrdiff_t>(i);
    if (dst[i].type == "Flush" && dst[i].ok) last_flush = static_cast<ptrdiff_t>(i);
  }
  ASSERT_GE(last_change, 0);
  EXPECT_GT(last_flush, last_change) << "no successful flush after the last write";
}

}  // namespace
}  // namespace mk::test
