// What the GUI relies on, through the OMA's public API: the live event stream (hello,
// job progress per disk, steps, log, end state, heartbeats, the stream ending when the
// OMA stops), the GUI listener (web app and the same API on one origin), schedules
// (validated, stored, surviving a restart, run by the scheduler with a fake clock), and
// the VM list's pass statistics (last pass, change-ID age, readiness, predicted downtime).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "fake_vma.h"
#include "oma/db/migrations.h"
#include "oma/db/sqlite_database.h"
#include "oma/errors.h"
#include "oma/jobs/pass_stats.h"
#include "oma/jobs/scheduler.h"
#include "oma/names.h"
#include "oma_service.h"
#include "support/files.h"

namespace mk::oma {
namespace {

using nlohmann::json;
using test::ApiClient;
using test::disk_state;

constexpr int64_t MiB = 1 << 20;

struct GuiService {
  mk::test::TempDir dir{"mk-oma-gui"};
  std::string psk;
  test::FakeVma vma;
  std::unique_ptr<Oma> oma;
  std::unique_ptr<ApiClient> api;

  explicit GuiService(std::function<void(OmaConfig&)> edit = nullptr)
      : psk(dir.file("data/nbd-psk.keys")),
        vma((std::filesystem::create_directories(dir.file("data")), mk::test::make_psk_file(psk, "oma"))) {
    start(edit);
  }
  void start(const std::function<void(OmaConfig&)>& edit = nullptr) {
    OmaConfig c = test::test_config(dir.file("data"), vma.url());
    c.events_poll_ms = 20;
    if (edit) edit(c);
    oma = std::make_unique<Oma>(c);
    oma->start();
    api = std::make_unique<ApiClient>(oma->api_port(), test::read_admin_token(dir.file("data")));
  }
  std::string token() { return test::read_admin_token(dir.file("data")); }
  std::string start_job(const std::string& vm, const std::string& kind) {
    auto r = api->post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", kind}}.dump());
    EXPECT_EQ(r.status, 201) << r.raw;
    return r.body.value("job_id", "");
  }
  void wait_replicated(const std::string& job) {
    for (int i = 0; i < 3000 && !vma.knows(job); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(vma.knows(job));
  }
};

// Reads /api/v1/events on its own thread and keeps every frame, parsed.
struct EventReader {
  struct Frame {
    std::string event;
    json data;
  };
  httplib::Client client;
  std::thread thread;
  std::mutex mu;
  std::vector<Frame> frames;
  std::string partial;
  int status = 0;
  std::atomic<bool> ended{false}, stop{false};

  EventReader(int port, const std::string& token) : client("127.0.0.1", port) {
    client.set_read_timeout(std::chrono::seconds(60));
    thread = std::thread([this, token] {
      httplib::Headers h{{"Authorization", "Bearer " + token}, {"Accept", "text/event-stream"}};
      auto res = client.Get(
          "/api/v1/events", h,
          [this](const httplib::Response& r) {
            status = r.status;
            return true;
          },
          [this](const char* data, size_t n) {
            std::lock_guard lock(mu);
            partial.append(data, n);
            for (size_t end; (end = partial.find("\n\n")) != std::string::npos;) {
              std::string block = partial.substr(0, end);
              partial.erase(0, end + 2);
              Frame f;
              for (size_t pos = 0; pos < block.size();) {
                size_t nl = block.find('\n', pos);
                std::string line = block.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
                if (line.rfind("event: ", 0) == 0) f.event = line.substr(7);
                if (line.rfind("data: ", 0) == 0) f.data = json::parse(line.substr(6));
                pos = nl == std::string::npos ? block.size() : nl + 1;
              }
              frames.push_back(std::move(f));
            }
            return !stop.load();
          });
      ended = true;
    });
  }
  ~EventReader() {
    stop = true;
    client.stop();
    if (thread.joinable()) thread.join();
  }
  // Waits (bounded, never asserting on time) for a frame matching `pred`.
  std::optional<Frame> wait_for(const std::function<bool(const Frame&)>& pred, int seconds = 60) {
    for (int i = 0; i < seconds * 100; ++i) {
      {
        std::lock_guard lock(mu);
        for (const auto& f : frames)
          if (pred(f)) return f;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return std::nullopt;
  }
  std::vector<Frame> all() {
    std::lock_guard lock(mu);
    return frames;
  }
};

using Frame = EventReader::Frame;

TEST(GuiApi, EventStreamShowsProgressPerDiskStepsLogAndTheEnd) {
  GuiService s;
  const std::string vm = test::test_vm_uuid(1);
  ASSERT_EQ(s.api->post("/api/v1/vms", test::vm_body(vm, 2, MiB).dump()).status, 201);
  EventReader ev(s.oma->api_port(), s.token());
  ASSERT_TRUE(ev.wait_for([](const Frame& f) { return f.event == "hello"; }));
  EXPECT_EQ(ev.status, 200);

  std::string job = s.start_job(vm, "full");
  s.wait_replicated(job);
  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Copying, MiB / 4, MiB));
  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Copying, MiB / 2, MiB));
  auto halfway = ev.wait_for([&](const Frame& f) {
    return f.event == "job" && f.data["job_id"] == job && f.data["disks"].size() == 2 &&
           f.data["disks"][0]["bytes_done"] == MiB / 4 && f.data["disks"][1]["bytes_done"] == MiB / 2;
  });
  ASSERT_TRUE(halfway);
  EXPECT_EQ(halfway->data["bytes_done"], MiB / 4 + MiB / 2);
  EXPECT_EQ(halfway->data["disks"][0]["phase"], "copying");
  EXPECT_EQ(halfway->data["disks"][0]["eta_seconds"], 7.0);
  EXPECT_EQ(halfway->data["disks"][0]["throughput_bps"], 4096.0);

  s.vma.set_disk(job, disk_state("2000", protocol::DiskStatus::Completed, MiB, MiB, "cbt-a"));
  s.vma.set_disk(job, disk_state("2001", protocol::DiskStatus::Completed, MiB, MiB, "cbt-b"));
  auto done = ev.wait_for([&](const Frame& f) { return f.event == "job" && f.data["status"] == "completed"; });
  ASSERT_TRUE(done);
  EXPECT_EQ(done->data["percent"], 100.0);
  EXPECT_TRUE(ev.wait_for([&](const Frame& f) {
    return f.event == "step" && f.data["job_id"] == job && f.data["name"] == "committing change IDs" &&
           f.data["status"] == "completed";
  }));
  EXPECT_TRUE(ev.wait_for([&](const Frame& f) {
    return f.event == "log" && f.data["job_id"] == job &&
           f.data["message"].get<std::string>().find("job completed") != std::string::npos;
  }));
  // The stream shows the states in order: never "completed" before "copying".
  std::vector<std::string> states;
  for (const auto& f : ev.all())
    if (f.event == "job" && f.data["job_id"] == job) states.push_back(f.data["status"]);
  auto copying = std::find(states.begin(), states.end(), "copying");
  auto completed = std::find(states.begin(), states.end(), "completed");
  EXPECT_LT(copying - states.begin(), completed - states.begin());
}

TEST(GuiApi, EventStreamSendsHeartbeatsAndEndsWhenTheOmaStops) {
  GuiService s([](OmaConfig& c) { c.events_heartbeat_ms = 100; });
  EventReader ev(s.oma->api_port(), s.token());
  auto hb = ev.wait_for([](const Frame& f) { return f.event == "heartbeat"; });
  ASSERT_TRUE(hb);
  EXPECT_GT(hb->data["at"].get<int64_t>(), 0);
  s.oma->stop();  // returns although a stream is open
  for (int i = 0; i < 3000 && !ev.ended; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(ev.ended);
}

TEST(GuiApi, OpenStreamsAreLimitedSoTheyNeverStarveRequests) {
  // Short heartbeats: a stream whose client left is noticed at its next write.
  GuiService s([](OmaConfig& c) { c.events_heartbeat_ms = 100; });
  std::vector<std::unique_ptr<EventReader>> readers;
  for (int i = 0; i < 8; ++i) {
    readers.push_back(std::make_unique<EventReader>(s.oma->api_port(), s.token()));
    ASSERT_TRUE(readers.back()->wait_for([](const Frame& f) { return f.event == "hello"; }));
  }
  httplib::Client c("127.0.0.1", s.oma->api_port());
  auto r = c.Get("/api/v1/events", {{"Authorization", "Bearer " + s.token()}, {"Accept", "text/event-stream"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_NE(r->body.find("close another browser tab"), std::string::npos) << r->body;
  EXPECT_EQ(s.api->get("/api/v1/vms").status, 200);
  readers.pop_back();  // one closes: a new stream is accepted again
  bool accepted = false;
  for (int i = 0; i < 100 && !accepted; ++i) {
    EventReader again(s.oma->api_port(), s.token());
    accepted = again.wait_for([](const Frame& f) { return f.event == "hello"; }, 1).has_value();
  }
  EXPECT_TRUE(accepted);
}

TEST(GuiApi, EventStreamNeedsTheEventStreamAcceptHeader) {
  GuiService s;
  auto r = s.api->get("/api/v1/events");
  EXPECT_EQ(r.status, 406);
  EXPECT_NE(r.body.value("error", "").find("text/event-stream"), std::string::npos) << r.raw;
}

TEST(GuiApi, GuiListenerServesTheWebAppAndTheSameApi) {
  mk::test::TempDir web{"mk-oma-web"};
  std::filesystem::create_directories(web.file("assets"));
  std::ofstream(web.file("index.html")) << "<!doctype html><title>OMA GUI</title>";
  std::ofstream(web.file("assets/app-1234.js")) << "console.log(1)";
  GuiService s([&](OmaConfig& c) {
    c.gui_listen = "127.0.0.1";
    c.gui_port = 0;
    c.gui_dir = web.path();
  });
  int port = s.oma->gui_port();
  ASSERT_GT(port, 0);
  std::ifstream pf(s.dir.file("data/gui.port"));
  int written = 0;
  pf >> written;
  EXPECT_EQ(written, port);

  httplib::Client c("127.0.0.1", port);
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_NE(page->body.find("OMA GUI"), std::string::npos);
  EXPECT_NE(page->get_header_value("Content-Security-Policy").find("default-src 'self'"), std::string::npos);
  auto js = c.Get("/assets/app-1234.js");
  ASSERT_TRUE(js);
  EXPECT_EQ(js->status, 200);
  EXPECT_NE(js->get_header_value("Content-Type").find("javascript"), std::string::npos);
  EXPECT_NE(js->get_header_value("Cache-Control").find("immutable"), std::string::npos);
  EXPECT_EQ(c.Get("/../../etc/passwd")->status, 404);

  ApiClient gui_api(port, s.token()), anon(port, ""), wrong(port, "mko_" + std::string(64, '0'));
  EXPECT_EQ(gui_api.get("/api/v1/vms").status, 200);
  EXPECT_EQ(anon.get("/api/v1/vms").status, 401);
  EXPECT_EQ(wrong.get("/api/v1/vms").status, 401);
  EXPECT_EQ(gui_api.get("/api/v1/openapi.json").body, s.api->get("/api/v1/openapi.json").body);
  EXPECT_EQ(gui_api.get("/api/v1/nope").status, 404);
  EventReader ev(port, s.token());
  EXPECT_TRUE(ev.wait_for([](const Frame& f) { return f.event == "hello"; }));
}

TEST(GuiApi, GuiListenerWithoutTheWebAppSaysHowToBuildIt) {
  mk::test::TempDir empty{"mk-oma-noweb"};
  GuiService s([&](OmaConfig& c) {
    c.gui_listen = "127.0.0.1";
    c.gui_port = 0;
    c.gui_dir = empty.path();
  });
  httplib::Client c("127.0.0.1", s.oma->gui_port());
  auto page = c.Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 503);
  EXPECT_NE(page->body.find("--target web"), std::string::npos);
  EXPECT_EQ(ApiClient(s.oma->gui_port(), s.token()).get("/api/v1/vms").status, 200);
}

TEST(GuiApi, SchedulesAreValidatedStoredAndSurviveARestart) {
  GuiService s;
  const std::string vm = test::test_vm_uuid(2);
  ASSERT_EQ(s.api->post("/api/v1/vms", test::vm_body(vm, 1, MiB).dump()).status, 201);
  const std::string path = "/api/v1/vms/" + vm + "/schedule";
  EXPECT_EQ(s.api->get(path).status, 404);
  EXPECT_EQ(s.api->put(path, R"({"interval_minutes": 0, "enabled": true})").body.value("field", ""),
            "interval_minutes");
  EXPECT_EQ(s.api->put(path, R"({"interval_minutes": 15, "enabled": "yes"})").body.value("field", ""), "enabled");
  EXPECT_EQ(s.api->put(path, R"({"interval_minutes": 15})").body.value("field", ""), "enabled");
  EXPECT_EQ(s.api->put("/api/v1/vms/" + test::test_vm_uuid(99) + "/schedule",
                       R"({"interval_minutes": 15, "enabled": true})")
                .status,
            404);
  auto put = s.api->put(path, R"({"interval_minutes": 15, "enabled": true})");
  ASSERT_EQ(put.status, 200) << put.raw;
  EXPECT_EQ(put.body["interval_minutes"], 15);
  int64_t next = put.body["next_run_at"];
  EXPECT_GT(next, 0);

  s.oma->stop();
  s.oma.reset();
  s.start();
  auto got = s.api->get(path);
  ASSERT_EQ(got.status, 200) << got.raw;
  EXPECT_EQ(got.body["interval_minutes"], 15);
  EXPECT_EQ(got.body["enabled"], true);
  EXPECT_EQ(got.body["next_run_at"], next);
  auto vms = s.api->get("/api/v1/vms").body["vms"];
  EXPECT_EQ(vms[0]["schedule"]["interval_minutes"], 15);

  EXPECT_EQ(s.api->put(path, R"({"interval_minutes": 30, "enabled": false})").body["next_run_at"], nullptr);
  EXPECT_EQ(s.api->del(path).status, 200);
  EXPECT_EQ(s.api->get(path).status, 404);
  EXPECT_EQ(s.api->del(path).status, 404);
}

// The scheduler alone, on a real database, with a fake clock and a recording starter.
struct SchedulerFixture : ::testing::Test {
  mk::test::TempDir dir{"mk-oma-sched"};
  db::SqliteDatabase database{dir.file("oma.db")};
  Repositories repos{database};
  int64_t clock = 1'000'000'000'000;
  std::vector<std::string> started;
  std::function<std::string(const std::string&)> starter = [this](const std::string& vm) {
    started.push_back(vm);
    return "job-" + std::to_string(started.size());
  };
  std::unique_ptr<Scheduler> scheduler;
  const std::string vm = test::test_vm_uuid(3);

  void SetUp() override {
    db::migrate(database);
    VmRecord v;
    v.vm_id = vm;
    v.name = "web01";
    v.vcenter = "vc";
    v.datacenter = "dc";
    v.guest_os = "other";
    v.power_state = protocol::PowerState::PoweredOn;
    v.cpus = 1;
    v.memory_mb = 512;
    DiskRecord d;
    d.vm_id = vm;
    d.disk_key = "2000";
    d.label = "Hard disk 1";
    d.capacity_bytes = MiB;
    repos.vms.add_vm(v, {d});
    SchedulerOptions o;
    o.now_ms = [this] { return clock; };
    o.start_job = [this](const std::string& id, JobKind kind) {
      EXPECT_EQ(kind, JobKind::Incremental);
      return starter(id);
    };
    scheduler = std::make_unique<Scheduler>(repos.schedules, repos.vms, o);
  }
  void advance_minutes(double m) { clock += static_cast<int64_t>(m * 60000); }
};

TEST_F(SchedulerFixture, StartsAnIncrementalPassEveryInterval) {
  scheduler->put(vm, 10, true);
  advance_minutes(9.9);
  EXPECT_EQ(scheduler->run_due(), 0);
  advance_minutes(0.1);
  EXPECT_EQ(scheduler->run_due(), 1);
  EXPECT_EQ(scheduler->run_due(), 0);  // not twice for one due time
  advance_minutes(5);
  EXPECT_EQ(scheduler->run_due(), 0);
  advance_minutes(5);
  EXPECT_EQ(scheduler->run_due(), 1);
  auto s = repos.schedules.find_schedule(vm);
  EXPECT_EQ(s->last_job_id, "job-2");
  EXPECT_EQ(s->last_run_at, clock);
  EXPECT_EQ(s->next_run_at, clock + 10 * 60000);
  // Down for an hour: one run when back, not six.
  advance_minutes(60);
  EXPECT_EQ(scheduler->run_due(), 1);
  EXPECT_EQ(started.size(), 3u);
}

TEST_F(SchedulerFixture, SkipsAVmWithAnActiveJobAndRecordsWhy) {
  scheduler->put(vm, 5, true);
  JobRecord j;
  j.job_id = new_uuid();
  j.vm_id = vm;
  j.kind = JobKind::Full;
  j.status = JobStatus::Copying;
  j.phase = "copying";
  j.created_at = clock;
  repos.jobs.create_job(j, {});
  advance_minutes(5);
  EXPECT_EQ(scheduler->run_due(), 0);
  EXPECT_TRUE(started.empty());
  auto s = repos.schedules.find_schedule(vm);
  EXPECT_NE(s->last_result->find("skipped"), std::string::npos);
  EXPECT_NE(s->last_result->find(j.job_id), std::string::npos);
  EXPECT_EQ(s->next_run_at, clock + 5 * 60000);
  repos.jobs.finish_job(j.job_id, JobStatus::Completed, std::nullopt);
  advance_minutes(5);
  EXPECT_EQ(scheduler->run_due(), 1);
}

TEST_F(SchedulerFixture, RecordsWhyAPassCouldNotStartAndPausedSchedulesDoNothing) {
  starter = [](const std::string& id) -> std::string {
    throw UsageError("VM " + id + " disk 2000 has no committed change ID: run a full replication first");
  };
  scheduler->put(vm, 1, true);
  advance_minutes(1);
  EXPECT_EQ(scheduler->run_due(), 0);
  EXPECT_NE(repos.schedules.find_schedule(vm)->last_result->find("run a full replication first"), std::string::npos);
  scheduler->put(vm, 1, false);
  advance_minutes(10);
  EXPECT_EQ(scheduler->run_due(), 0);
  EXPECT_NE(repos.schedules.find_schedule(vm)->last_result->find("not started"), std::string::npos);
}

TEST(GuiApi, DiscoveryMarksTheVmsTheOmaManagesAndAnUnreachableVmaIsSaidSo) {
  GuiService s;
  const std::string known = test::test_vm_uuid(5), other = test::test_vm_uuid(6);
  s.vma.add_source_vm(known, "web01", true);
  s.vma.add_source_vm(other, "db01", false);
  ASSERT_EQ(s.api->post("/api/v1/vms", test::vm_body(known, 1, MiB).dump()).status, 201);
  auto r = s.api->get("/api/v1/discover");
  ASSERT_EQ(r.status, 200) << r.raw;
  EXPECT_EQ(r.body["vcenter"], "vcsim.test");
  ASSERT_EQ(r.body["vms"].size(), 2u);
  for (const auto& v : r.body["vms"]) {
    EXPECT_EQ(v["managed"], v["vm_id"] == known) << v.dump();
    if (v["vm_id"] == other) {
      EXPECT_EQ(v["power_state"], "poweredOff");
    }
    EXPECT_EQ(v["blocked"], false) << v.dump();
  }

  // A VM that a pass would refuse is marked blocked with its findings, in discovery and
  // in its preflight.
  json finding = {{"code", "rdm-physical"}, {"disk_key", "2001"}, {"problem", "a physical-mode RDM"},
                  {"remedy", "migrate the LUN another way"}, {"text", "VM web01 disk Hard disk 2: a physical-mode RDM"}};
  s.vma.set_findings(known, {protocol::decode<protocol::PreflightFinding>(finding)});
  r = s.api->get("/api/v1/discover");
  ASSERT_EQ(r.status, 200) << r.raw;
  for (const auto& v : r.body["vms"]) {
    EXPECT_EQ(v["blocked"], v["vm_id"] == known) << v.dump();
    if (v["vm_id"] == known) {
      EXPECT_EQ(v["findings"], json::array({finding}));
    }
  }
  auto pre = s.api->get("/api/v1/vms/" + known + "/preflight");
  ASSERT_EQ(pre.status, 200) << pre.raw;
  EXPECT_EQ(pre.body["blocked"], true);
  EXPECT_EQ(pre.body["findings"], json::array({finding}));
  EXPECT_EQ(s.api->get("/api/v1/vms/" + other + "/preflight").status, 404) << "not managed by the OMA";

  // No VMA behind the URL: discovery answers 502 naming it; health says "unreachable".
  mk::test::TempDir d{"mk-oma-novma"};
  Oma lonely(test::test_config(d.file("data"), "http://127.0.0.1:9"));
  lonely.start();
  ApiClient api(lonely.api_port(), test::read_admin_token(d.file("data")));
  auto disc = api.get("/api/v1/discover");
  EXPECT_EQ(disc.status, 502);
  EXPECT_NE(disc.body.value("error", "").find("127.0.0.1:9"), std::string::npos) << disc.raw;
  auto health = api.get("/api/v1/vma/health");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body["status"], "unreachable");
  EXPECT_TRUE(health.body["error"].is_string());
}

JobRecord pass(JobKind kind, double start_s, double end_s, int64_t bytes) {
  JobRecord j;
  j.job_id = enum_name(kind) + std::to_string(start_s);
  j.kind = kind;
  j.status = JobStatus::Completed;
  j.created_at = static_cast<int64_t>(start_s * 1000);
  j.finished_at = static_cast<int64_t>(end_s * 1000);
  j.bytes_done = bytes;
  return j;
}

TEST(PassStats, PredictedDowntimeScalesRecentIncrementalDurationsByTheChangeWindow) {
  // Full 0-1000 s; incrementals every 600 s taking 30, 40 and 50 s.
  std::vector<JobRecord> p = {pass(JobKind::Full, 0, 1000, 100), pass(JobKind::Incremental, 1600, 1630, 10),
                              pass(JobKind::Incremental, 2230, 2270, 10), pass(JobKind::Incremental, 2870, 2920, 10)};
  // d = 40 s; w = mean(600, 600, 600) = 600 s.
  int used = 0;
  EXPECT_DOUBLE_EQ(*predict_downtime_seconds(p, 2920 * 1000 + 300 * 1000, &used), 40.0);  // e < w
  EXPECT_EQ(used, 3);
  EXPECT_DOUBLE_EQ(*predict_downtime_seconds(p, (2920 + 1200) * 1000), 80.0);  // e = 2w
  // Only the last three incrementals count.
  p.insert(p.begin() + 1, pass(JobKind::Incremental, 1001, 1500, 10));
  EXPECT_DOUBLE_EQ(*predict_downtime_seconds(p, 2920 * 1000), 40.0);
  EXPECT_FALSE(predict_downtime_seconds({pass(JobKind::Full, 0, 10, 1)}, 20000));
}

// The final pass runs with the source powered off and takes no snapshot: the incremental
// passes' snapshot creation and removal are left out of the prediction.
TEST(PassStats, PredictedDowntimeLeavesOutTheIncrementalPassesSnapshots) {
  std::vector<JobRecord> p = {pass(JobKind::Full, 0, 1000, 100), pass(JobKind::Incremental, 1600, 1630, 10),
                              pass(JobKind::Incremental, 2230, 2270, 10), pass(JobKind::Incremental, 2870, 2920, 10)};
  // Each incremental spent 6 s on its snapshot (4 s to create, 2 s to remove), the last
  // 36 s (longer than itself: the result is clamped at 0 s, not negative). The full
  // pass's snapshot does not count.
  std::map<std::string, double> snapshots = {
      {p[0].job_id, 500}, {p[1].job_id, 6}, {p[2].job_id, 6}, {p[3].job_id, 60}};
  // d = mean(30 - 6, 40 - 6, max(0, 50 - 60)) = 58 / 3; e < w.
  EXPECT_DOUBLE_EQ(*predict_downtime_seconds(p, 2920 * 1000 + 300 * 1000, nullptr, snapshots), 58.0 / 3);
  snapshots[p[3].job_id] = 6;  // d = 34 s; e = 2w
  EXPECT_DOUBLE_EQ(*predict_downtime_seconds(p, (2920 + 1200) * 1000, nullptr, snapshots), 68.0);
  // Passes without recorded phases count whole, as before.
  EXPECT_DOUBLE_EQ(*predict_downtime_seconds(p, 2920 * 1000, nullptr, {}), 40.0);
}

TEST(GuiApi, VmListShowsLastPassChangeIdAgeReadinessAndPredictedDowntime) {
  GuiService s;
  const std::string vm = test::test_vm_uuid(4);
  ASSERT_EQ(s.api->post("/api/v1/vms", test::vm_body(vm, 2, MiB).dump()).status, 201);
  auto first = s.api->get("/api/v1/vms").body["vms"][0];
  EXPECT_EQ(first["last_pass"], nullptr);
  EXPECT_EQ(first["ready_for_cutover"], false);
  EXPECT_EQ(first["cutover_blockers"].size(), 2u);  // both disks lack a change ID
  EXPECT_EQ(first["predicted_downtime_seconds"], nullptr);
  EXPECT_EQ(first["disks"].size(), 2u);

  s.vma.set_auto_complete(true);
  for (std::string kind : {"full", "incremental"}) {
    std::string job = s.start_job(vm, kind);
    auto j = test::wait_for_job(*s.api, job, test::job_ended);
    ASSERT_EQ(j["status"], "completed") << j.dump();
  }
  auto v = s.api->get("/api/v1/vms").body["vms"][0];
  EXPECT_EQ(v["last_pass"]["kind"], "incremental");
  EXPECT_EQ(v["last_pass"]["status"], "completed");
  EXPECT_EQ(v["last_pass"]["bytes"], 2 * MiB);
  EXPECT_GE(v["last_pass"]["seconds"].get<double>(), 0);
  EXPECT_TRUE(v["ready_for_cutover"].get<bool>()) << v.dump();
  EXPECT_TRUE(v["cutover_blockers"].empty());
  EXPECT_GE(v["change_id_age_seconds"].get<double>(), 0);
  EXPECT_TRUE(v["predicted_downtime_seconds"].is_number()) << v.dump();
  EXPECT_EQ(v["prediction_passes"], 1);

  // Once cut over, the VM is neither ready for a cutover nor facing a downtime.
  s.oma->repos().vms.set_vm_status(vm, VmStatus::CutOver);
  v = s.api->get("/api/v1/vms").body["vms"][0];
  EXPECT_FALSE(v["ready_for_cutover"].get<bool>());
  EXPECT_EQ(v["predicted_downtime_seconds"], nullptr);
}

}  // namespace
}  // namespace mk::oma
