// Property tests of the copy, over many random seeds: random disks (data, allocated
// zeros and holes at unaligned places), random changes since the last pass (new data,
// zeroed and punched areas) with changed areas that over-report them as CBT may, and
// random fault schedules (request errors, servers killed and restarted, the copy killed
// and resumed from its checkpoint). After every seed the target equals the source byte
// for byte; the source's log shows no read of a hole or outside the pass's scope, and the
// target's log no write outside it.
//
// MK_PROPERTY_SEEDS sets the seeds per test (default 8; `make property` and `make fuzz` run more) and
// MK_PROPERTY_SEED_BASE the first one; a failure names its seed, so that
// `MK_PROPERTY_SEED_BASE=N MK_PROPERTY_SEEDS=1` replays it.
#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include "common/error.h"
#include "common/range.h"
#include "copy_fixture.h"
#include "support/nbdkit_log.h"

namespace mk::test {
namespace {

using mk::KiB;
using mk::MiB;

uint64_t env_or(const char* name, uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 10) : fallback;
}

std::vector<uint64_t> seeds() {
  uint64_t base = env_or("MK_PROPERTY_SEED_BASE", 1), n = env_or("MK_PROPERTY_SEEDS", 8);
  std::vector<uint64_t> out;
  for (uint64_t i = 0; i < n; ++i) out.push_back(base + i);
  return out;
}

uint64_t pick(std::mt19937_64& rng, uint64_t lo, uint64_t hi) {
  return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
}

// Up to `most` random areas of at most `longest` bytes each, anywhere in [0, size).
RangeList random_areas(std::mt19937_64& rng, uint64_t size, int most, uint64_t longest) {
  RangeList out;
  for (int i = pick(rng, 0, most); i > 0; --i) {
    uint64_t start = pick(rng, 0, size - 1);
    out.push_back({start, pick(rng, 1, std::min(longest, size - start))});
  }
  return normalize(out);
}

std::vector<Area> as_areas(const RangeList& l) {
  std::vector<Area> out;
  for (const Range& r : l) out.push_back({r.start, r.length});
  return out;
}

// The allocated ranges of a file, as the file system reports them (SEEK_DATA/SEEK_HOLE):
// what nbdkit's file plugin reports as data, so the only places a copy may read.
RangeList allocated(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw mk::Error("cannot open " + path);
  off_t size = ::lseek(fd, 0, SEEK_END), at = 0;
  RangeList out;
  while (at < size) {
    off_t data = ::lseek(fd, at, SEEK_DATA);
    if (data < 0) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    out.push_back({static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data)});
    at = hole;
  }
  ::close(fd);
  return out;
}

void punch_hole(const std::string& path, uint64_t start, uint64_t length) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(start),
                        static_cast<off_t>(length)),
            0)
      << path;
  ::close(fd);
}

void copy_file(const std::string& from, const std::string& to) {
  std::ifstream in(from, std::ios::binary);
  std::ofstream out(to, std::ios::binary | std::ios::trunc);
  out << in.rdbuf();
}

// Every request of `requests` lies inside `allowed`.
void expect_inside(const std::vector<NbdRequest>& requests, const RangeList& allowed, const std::string& what) {
  for (const NbdRequest& r : requests) {
    if (r.count == 0) continue;
    RangeList outside = subtract({{r.offset, r.count}}, allowed);
    EXPECT_TRUE(outside.empty()) << what << ": " << r.type << " [" << r.offset << ", " << r.end() << ") touches ["
                                 << outside[0].start << ", " << outside[0].end() << ")";
  }
}

// A disk of a random odd size with random data, allocated zeros and holes.
std::string random_disk(const std::string& path, std::mt19937_64& rng, uint64_t& size) {
  size = pick(rng, 256 * KiB, 6 * MiB) + pick(rng, 0, 4095);
  create_sparse_file(path, size);
  for (const Range& r : random_areas(rng, size, 10, 768 * KiB)) write_random_at(path, r.start, r.length, rng());
  for (const Range& r : random_areas(rng, size, 3, 256 * KiB)) fill_at(path, r.start, r.length, '\0');
  return path;
}

class CopyProperty : public CopyTest {
 protected:
  NbdkitServer& serve_logged(const std::string& path, const std::string& log, NbdkitOptions options = {}) {
    options.filters.insert(options.filters.begin(), "log");
    options.args.push_back("logfile=" + file(log));
    return serve(path, std::move(options));
  }
};

// An incremental pass over random changes with over-reporting changed areas: the target
// ends equal to the source; reads stay inside scope ∩ allocated; writes inside the scope.
TEST_F(CopyProperty, IncrementalPassOverRandomChangesReadsNoHoleAndTouchesOnlyTheScope) {
  for (uint64_t seed : seeds()) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    const std::string tag = std::to_string(seed);
    uint64_t size = 0;
    std::string source = random_disk(file("source-" + tag), rng, size);
    std::string target = file("target-" + tag);
    copy_file(source, target);  // the state the last pass left
    // What the guest did since: new data, zeroed and discarded (punched) areas.
    RangeList changed;
    for (const Range& r : random_areas(rng, size, 8, 512 * KiB)) {
      switch (pick(rng, 0, 3)) {
        case 0: fill_at(source, r.start, r.length, '\0'); break;
        case 1: punch_hole(source, r.start, r.length); break;
        default: write_random_at(source, r.start, r.length, rng()); break;
      }
      changed.push_back(r);
    }
    // CBT reports whole blocks and may report more than changed.
    RangeList reported = changed;
    for (const Range& r : random_areas(rng, size, 3, 256 * KiB)) reported.push_back(r);
    reported = normalize(reported);
    std::string areas = areas_file("areas-" + tag + ".json", as_areas(reported));
    std::vector<std::string> extra{"--changed-areas", areas, "--requests", std::to_string(pick(rng, 1, 64)),
                                   "--connections", std::to_string(pick(rng, 1, 4))};

    NbdkitServer& src = serve_logged(source, "source-" + tag + ".log");
    NbdkitServer& dst = serve_logged(target, "target-" + tag + ".log");
    RunResult r = copy(src.uri(), dst.uri(), extra);
    ASSERT_EQ(r.exit_code, 0) << describe(r);
    ASSERT_EQ(first_difference(source, target), std::nullopt);
    src.stop();
    dst.stop();
    auto reads = requests_of(parse_nbdkit_log(file("source-" + tag + ".log")), "Read");
    expect_inside(reads, intersect(reported, allocated(source)), "source");
    auto target_log = parse_nbdkit_log(file("target-" + tag + ".log"));
    for (const char* type : {"Write", "Zero", "Trim"}) expect_inside(requests_of(target_log, type), reported, "target");
    if (HasFailure()) return;
  }
}

// The last bytes_done of a progress file (0 before the first line).
uint64_t bytes_done(const std::string& progress) {
  std::ifstream in(progress);
  uint64_t done = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("bytes_done")) done = j["bytes_done"].get<uint64_t>();
  }
  return done;
}

enum class Fault { KillSource, KillTarget, KillCopy };

// A full copy to a reused target under a random fault schedule: request errors on both
// servers at random rates, and up to three events at random points of the progress that
// kill a server (restarted at once, the copy reconnects) or the copy itself (run again,
// resuming from its checkpoint). A copy that gave up (retries spent) is run again too.
// In the end the target equals the source.
TEST_F(CopyProperty, FullCopyUnderRandomFaultsEndsEqualToTheSource) {
  for (uint64_t seed : seeds()) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed * 7919);
    const std::string tag = std::to_string(seed);
    uint64_t size = 0;
    std::string source = random_disk(file("fsource-" + tag), rng, size);
    std::string target = file("ftarget-" + tag);
    create_sparse_file(target, size);
    if (pick(rng, 0, 1)) write_random_at(target, 0, size, rng());  // a reused volume with old content
    auto rate = [&] { return std::to_string(std::vector<int>{0, 1, 5, 10}[pick(rng, 0, 3)]) + "%"; };
    NbdkitServer& src = serve(source, {.args = {"error-pread=EIO", "error-pread-rate=" + rate(), "delay-read=1ms"},
                                       .filters = {"error", "delay"}});
    NbdkitServer& dst =
        serve(target, {.args = {"error-pwrite=EIO", "error-pwrite-rate=" + rate(), "error-zero=EIO",
                                "error-zero-rate=" + rate(), "delay-write=2ms", "delay-zero=2ms"},
                       .filters = {"error", "delay"}});
    std::vector<std::pair<double, Fault>> schedule;
    for (int i = pick(rng, 0, 3); i > 0; --i)
      schedule.push_back({std::uniform_real_distribution<double>(0.05, 0.9)(rng), Fault(pick(rng, 0, 2))});
    std::sort(schedule.begin(), schedule.end(), [](auto& a, auto& b) { return a.first < b.first; });
    const std::string checkpoint = file("checkpoint-" + tag), progress = file("progress-" + tag);
    std::vector<std::string> args{"copy", src.uri(), dst.uri(), "--request-size", kRequestSize, "--requests",
                                  std::to_string(pick(rng, 1, 64)), "--checkpoint", checkpoint, "--progress-json",
                                  progress};

    int status = -1;
    for (int run = 0; run < 8 && status != 0; ++run) {
      std::remove(progress.c_str());
      mk::Subprocess p = start_migratekit(args, file("copy.out"), file("copy.err"));
      while (p.running()) {
        if (!schedule.empty() && bytes_done(progress) >= schedule.front().first * size) {
          Fault f = schedule.front().second;
          schedule.erase(schedule.begin());
          if (f == Fault::KillCopy) {
            p.signal(SIGKILL);
          } else {
            NbdkitServer& s = f == Fault::KillSource ? src : dst;
            s.signal(SIGKILL);
            s.restart();
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
      auto st = p.wait_for(std::chrono::seconds(120));
      ASSERT_TRUE(st.has_value()) << "migratekit hung: " << read_file(file("copy.err"));
      status = *st;
    }
    ASSERT_EQ(status, 0) << read_file(file("copy.err"));
    ASSERT_EQ(first_difference(source, target), std::nullopt);
  }
}

}  // namespace
}  // namespace mk::test
