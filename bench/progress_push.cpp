// oma-bench-push (issue 14, item 5): how long a change on the VMA takes to reach the
// OMA's record and the GUI's event stream, with the VMA holding the OMA's progress calls
// (long polls, protocol 6) against the same OMA and VMA answering at once (the OMA then
// polls every second, as before), in one run.
//
//  (a) a disk's completion: from the moment the VMA reports it to the moment the OMA's
//      job record (the database) says the disk completed;
//  (b) byte progress: from the moment the VMA's progress changes to the moment an event
//      stream subscriber (the OMA's EventHub, in-process) gets the job frame with it.
//
// The VMA is the tests' fake VMA (tests/oma/fake_vma.h) with scripted progress: what is
// measured is the path VMA answer -> OMA -> database / stream, not a copy. (a) includes
// what the fake does before it reports a completion: it writes the disk's 64 KiB through
// NBD into the export and flushes (an honest VMA did that before). The OMA is in-process
// (SQLite, local volumes, nbdkit exports) with poll_interval 1 s. Prints the medians and
// the ratio polled/pushed; targets: (a) <= 100 ms, (b) <= 300 ms.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <thread>
#include <vector>

#include "fake_vma.h"
#include "oma/app.h"
#include "oma/gui/event_hub.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/temp_dir.h"

using nlohmann::json;
using namespace mk::oma;
namespace protocol = mk::protocol;
using Clock = std::chrono::steady_clock;

namespace {

constexpr int64_t kDisk = 64 * 1024;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Figures {
  std::vector<double> completion_ms, stream_ms;
};

// Waits (up to 60 s) until `done()`; throws otherwise.
template <typename F>
void wait_until(F done, const std::string& what) {
  auto end = Clock::now() + std::chrono::seconds(60);
  while (!done()) {
    if (Clock::now() > end) throw mk::Error("timed out waiting for " + what);
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

Figures run(bool pushed, int jobs) {
  mk::test::TempDir dir{"mk-bench-push"};
  std::filesystem::create_directories(dir.file("data"));
  test::FakeVma vma(mk::test::make_psk_file(dir.file("data/nbd-psk.keys"), "oma"));
  vma.hold_progress(pushed);
  OmaConfig c = test::test_config(dir.file("data"), vma.url());
  c.poll_interval_ms = 1000;
  Oma oma(c);
  oma.start();
  test::ApiClient api(oma.api_port(), test::read_admin_token(dir.file("data")));
  auto sub = oma.events().subscribe();
  Figures f;
  for (int i = 0; i < jobs; ++i) {
    std::string vm = test::test_vm_uuid(100 + i);
    if (api.post("/api/v1/vms", test::vm_body(vm, 1, kDisk).dump()).status != 201) throw mk::Error("adding a VM failed");
    auto r = api.post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", "full"}}.dump());
    if (r.status != 201) throw mk::Error("starting a pass failed: " + r.raw);
    std::string job = r.body.value("job_id", "");
    wait_until([&] { return vma.knows(job); }, "the replicate call");
    vma.set_disk(job, test::disk_state("2000", protocol::DiskStatus::Copying, 1, kDisk));
    wait_until([&] { return oma.repos().jobs.job_disks(job)[0].bytes_done == 1; }, "the first progress");
    // Let the OMA settle into its wait (or its poll interval) before the change.
    std::this_thread::sleep_for(std::chrono::milliseconds(150 + 37 * (i % 10)));

    sub->next(std::chrono::milliseconds(0));  // drop what came before
    const int64_t marker = 4096 + i;
    auto t0 = Clock::now();
    vma.set_disk(job, test::disk_state("2000", protocol::DiskStatus::Copying, marker, kDisk));
    for (bool seen = false; !seen;) {
      auto frames = sub->next(std::chrono::seconds(30));
      if (!frames || (frames->empty() && ms_since(t0) > 30000)) throw mk::Error("no event with the new bytes");
      for (const auto& frame : *frames) {
        if (frame.rfind("event: job\n", 0) != 0 || frame.find(job) == std::string::npos) continue;
        json j = json::parse(frame.substr(frame.find("data: ") + 6));
        if (j["disks"][0]["bytes_done"] == marker) seen = true;
      }
    }
    f.stream_ms.push_back(ms_since(t0));

    std::this_thread::sleep_for(std::chrono::milliseconds(150 + 53 * (i % 10)));
    t0 = Clock::now();
    vma.set_disk(job, test::disk_state("2000", protocol::DiskStatus::Completed, kDisk, kDisk, "cbt-" + vm));
    wait_until([&] { return oma.repos().jobs.job_disks(job)[0].status == protocol::DiskStatus::Completed; },
               "the completion's record");
    f.completion_ms.push_back(ms_since(t0));
    wait_until([&] { return test::job_ended(api.get("/api/v1/jobs/" + job).body); }, "the job's end");
  }
  oma.events().unsubscribe(sub);
  if (!vma.violations().empty()) throw mk::Error("the fake VMA saw a protocol violation: " + vma.violations()[0]);
  oma.stop();
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"oma-bench-push: VMA change -> OMA record / event stream, pushed against polled"};
  int jobs = 15;
  app.add_option("--jobs", jobs, "passes per mode (one change of each kind per pass)")->check(CLI::Range(1, 1000));
  CLI11_PARSE(app, argc, argv);
  try {
    Figures polled = run(false, jobs);
    Figures pushed = run(true, jobs);
    auto line = [](const char* what, const std::vector<double>& p, const std::vector<double>& q, double target) {
      fmt::print("{:<44} polled {:8.1f} ms   pushed {:8.1f} ms   ratio {:6.1f}x   target <= {:.0f} ms: {}\n", what,
                 median(p), median(q), median(q) > 0 ? median(p) / median(q) : 0.0, target,
                 median(q) <= target ? "met" : "NOT met");
    };
    fmt::print("medians over {} passes each (fake VMA, in-process OMA, poll_interval 1 s)\n", jobs);
    line("(a) disk completed on VMA -> OMA record", polled.completion_ms, pushed.completion_ms, 100);
    line("(b) progress on VMA -> event stream frame", polled.stream_ms, pushed.stream_ms, 300);
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "oma-bench-push: {}\n", e.what());
    return 2;
  }
}
