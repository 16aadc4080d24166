// oma-bench-progress: requests per second and latency percentiles of
// GET /api/v1/jobs/{id}/progress (bearer token checked, job and disks read from the
// database) with N concurrent clients on loopback, against GET /health (no token, one
// trivial query) in the same run as the baseline. Each request opens its own
// connection, as the CLI and most pollers do (so over --https every request pays a
// full TLS handshake; --keep-alive reuses one connection per client). A private OMA is
// started in a temporary directory and removed afterwards.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <httplib.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/tls.h"
#include "oma/app.h"
#include "oma/names.h"

using namespace mk::oma;

namespace {

struct Result {
  double rps = 0, p50_ms = 0, p99_ms = 0, max_ms = 0;
  uint64_t ok = 0, failed = 0;
};

// `fingerprint`: HTTPS, pinning it; "": plain HTTP.
Result hammer(int port, const std::string& fingerprint, bool keep_alive, const std::string& path,
              const std::string& token, int clients, double seconds) {
  std::atomic<bool> stop{false};
  std::vector<std::vector<double>> lat(clients);
  std::vector<uint64_t> failed(clients, 0);
  std::vector<std::thread> threads;
  auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      httplib::Client cli(fmt::format("{}://127.0.0.1:{}", fingerprint.empty() ? "http" : "https", port));
      if (!fingerprint.empty()) mk::tls::apply_client_trust(cli, {fingerprint, ""});
      cli.set_keep_alive(keep_alive);
      httplib::Headers h;
      if (!token.empty()) h.emplace("Authorization", "Bearer " + token);
      while (!stop.load(std::memory_order_relaxed)) {
        auto s = std::chrono::steady_clock::now();
        auto r = cli.Get(path.c_str(), h);
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s).count();
        if (r && r->status == 200) lat[c].push_back(ms);
        else failed[c]++;
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop = true;
  for (auto& t : threads) t.join();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> all;
  Result r;
  for (int c = 0; c < clients; ++c) {
    all.insert(all.end(), lat[c].begin(), lat[c].end());
    r.failed += failed[c];
  }
  std::sort(all.begin(), all.end());
  r.ok = all.size();
  if (!all.empty()) {
    r.rps = static_cast<double>(all.size()) / elapsed;
    r.p50_ms = all[all.size() / 2];
    r.p99_ms = all[std::min(all.size() - 1, all.size() * 99 / 100)];
    r.max_ms = all.back();
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 100, threads = 16;
  double seconds = 5;
  bool https = false, keep_alive = false;
  CLI::App app{"Benchmark GET of a job's progress on the OMA API"};
  app.add_option("--clients", clients, "Concurrent clients (default 100)")->check(CLI::Range(1, 1000));
  app.add_option("--seconds", seconds, "Duration of each run (default 5)")->check(CLI::Range(0.5, 600.0));
  app.add_flag("--https", https, "Serve and call the API over HTTPS (the OMA's own certificate, pinned)");
  app.add_flag("--keep-alive", keep_alive, "One connection per client for all its requests");
  CLI11_PARSE(app, argc, argv);
  (void)threads;

  char tmpl[] = "/tmp/oma-bench-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  std::string dir = tmpl;
  int rc = 0;
  try {
    OmaConfig c;
    c.data_dir = dir + "/data";
    c.api_listen = c.nbd_listen = "127.0.0.1";
    c.api_port = c.nbd_port = 0;
    c.vma_url = "http://127.0.0.1:9";
    if (https) c.https.mode = "on";
    Oma oma(c);
    oma.start();
    std::ifstream tf(c.data_dir + "/admin.token");
    std::string token;
    std::getline(tf, token);

    // A job with two disks in the middle of copying, written as the poller would.
    std::string vm = new_uuid(), job = new_uuid();
    VmRecord v;
    v.vm_id = vm;
    v.name = "bench";
    oma.repos().vms.add_vm(v, {DiskRecord{vm, "2000", 0, "d0", 1 << 30}, DiskRecord{vm, "2001", 1, "d1", 1 << 30}});
    JobRecord j;
    j.job_id = job;
    j.vm_id = vm;
    j.kind = JobKind::Full;
    j.status = JobStatus::Copying;
    j.phase = "copying";
    j.created_at = now_ms();
    std::vector<JobDiskRecord> disks(2);
    for (int i = 0; i < 2; ++i) {
      disks[i].job_id = job;
      disks[i].disk_key = std::to_string(2000 + i);
      disks[i].unit = i;
      disks[i].export_name = export_name(vm, i);
      disks[i].status = mk::protocol::DiskStatus::Copying;
      disks[i].bytes_done = 300 << 20;
      disks[i].bytes_total = 1 << 30;
    }
    oma.repos().jobs.create_job(j, disks);
    oma.repos().jobs.roll_up_progress(job);

    int port = oma.api_port();
    std::string fp = https ? mk::tls::certificate_file_fingerprint(c.data_dir + "/https/cert.pem") : "";
    fmt::print("OMA API on {}://127.0.0.1:{}, {} clients, {:.1f} s per run, {}\n", https ? "https" : "http", port,
               clients, seconds, keep_alive ? "keep-alive" : "one connection per request");
    Result health = hammer(port, fp, keep_alive, "/health", "", clients, seconds);
    Result progress = hammer(port, fp, keep_alive, "/api/v1/jobs/" + job + "/progress", token, clients, seconds);
    auto show = [](const char* name, const Result& r) {
      fmt::print("{:<28} {:>9.0f} req/s   p50 {:>7.2f} ms   p99 {:>7.2f} ms   max {:>7.2f} ms   ok {}  failed {}\n",
                 name, r.rps, r.p50_ms, r.p99_ms, r.max_ms, r.ok, r.failed);
    };
    show("GET /health (baseline)", health);
    show("GET /api/v1/jobs/ID/progress", progress);
    if (health.rps > 0) fmt::print("progress / health throughput ratio: {:.2f}\n", progress.rps / health.rps);
    if (progress.failed) rc = 1;
    oma.stop();
  } catch (const std::exception& e) {
    fmt::print(stderr, "oma-bench-progress: {}\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  return rc;
}
