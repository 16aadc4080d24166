// oma-bench-scale (issue 18, item 7): what several OMA nodes buy, measured on this machine.
//
//  1. Throughput: N VMs (default 30) with tiny disks (default 1 MiB, so that the figure
//     is the orchestration's, not the copy's) each get a full pass and a cutover, all
//     started at once, through one OMA node and then through three, every node a real
//     `oma` process on one MariaDB database, the CloudStack simulator (one OMA VM per
//     node, each with its own by-id directory) and the fake VMA (real `migratekit copy`
//     per disk into the node's export). Printed: VMs per hour for each node count (N /
//     time from the first request to the last cutover done), the ratio, per-VM medians.
//     Every VM must end cut over with every volume identical to its source by SHA-256,
//     or the benchmark ends with an error.
//  2. API latency: GET /api/v1/vms with 1,000 VMs in the database (seeded through the
//     API, each with one completed full pass seeded through the repositories), p50 and
//     p99 over sequential requests, through the node that seeded them and through a
//     second node on the same database.
//
// Client side: each VM is placed first (POST /api/v1/vms/{vm}/placement on any node),
// then its pass and its cutover are asked of the node that holds its volumes, as a
// script driving several nodes does; jobs are polled every --poll-ms. The OMAs run with
// the tests' settings (the VMA's progress polled every 50 ms). Everything runs in a
// temporary directory; every process is stopped by PID on every exit path.
//
// Exit status: 0 when every VM was cut over and verified, 2 on an error (a pass or
// cutover failed, a volume differs, a process did not start).
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "fake_vma.h"
#include "mariadb_server.h"
#include "oma/db/repositories.h"
#include "oma/names.h"
#include "oma_process.h"
#include "oma_service.h"
#include "sim_server.h"
#include "support/files.h"
#include "support/nbdkit_server.h"
#include "support/net.h"
#include "support/temp_dir.h"

using nlohmann::json;
using namespace mk::oma;
using namespace mk::oma::test;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int vms = 30;
  std::vector<int> node_counts = {1, 3};
  int disk_mib = 1;
  int slots = 32;  // data-volume slots per node (KVM's cap)
  int poll_ms = 250;
  int api_vms = 1000;
  int api_requests = 200;
  int api_nodes = 2;
  bool api_passes = true;
  bool skip_throughput = false, skip_api = false;
  std::string json_out;
  bool keep = false;
};

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

// One OMA node: a real `oma` process with its own data directory.
struct Node {
  std::string id, data, log;
  std::unique_ptr<OmaProcess> process;
  int port = 0;
};

// `count` OMA nodes over one database: node 1 starts first, the others share its
// secrets key and NBD key (every node of a service does) and its admin token (the
// database's). `per_node(i)` gives node i's own arguments (1-based).
class Nodes {
 public:
  Nodes(const std::string& dir, const std::string& db_url, const std::string& vma_url, int count,
        const std::function<std::vector<std::string>(int)>& per_node) {
    for (int i = 1; i <= count; ++i) {
      Node n;
      n.id = fmt::format("bench-{}", i);
      n.data = fmt::format("{}/{}", dir, n.id);
      n.log = fmt::format("{}/{}.log", dir, n.id);
      std::filesystem::create_directories(n.data);
      if (i > 1) {
        for (const char* f : {"secrets.key", "nbd-psk.keys"})
          std::filesystem::copy_file(nodes_[0].data + "/" + f, n.data + "/" + f,
                                     std::filesystem::copy_options::overwrite_existing);
      }
      std::vector<std::string> args{"--database", db_url, "--node-id", n.id};
      auto own = per_node(i);
      args.insert(args.end(), own.begin(), own.end());
      n.process = std::make_unique<OmaProcess>(n.data, vma_url, n.log, args);
      n.port = n.process->port;
      nodes_.push_back(std::move(n));
    }
    token_ = read_admin_token(nodes_[0].data);
  }
  const std::vector<Node>& all() const { return nodes_; }
  std::unique_ptr<ApiClient> client(size_t i) const { return std::make_unique<ApiClient>(nodes_[i].port, token_); }
  std::unique_ptr<ApiClient> client(const std::string& id) const {
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].id == id) return client(i);
    throw mk::Error("no node " + id);
  }

 private:
  std::vector<Node> nodes_;
  std::string token_;
};

void expect(const HttpReply& r, std::initializer_list<int> ok, const std::string& what) {
  for (int s : ok)
    if (r.status == s) return;
  throw mk::Error(fmt::format("{}: HTTP {}: {}", what, r.status, r.raw.substr(0, 2000)));
}

// Polls a job until it ended; returns its last JSON.
json wait_job(ApiClient& api, const std::string& job, int poll_ms) {
  for (;;) {
    HttpReply r = api.get("/api/v1/jobs/" + job + "/progress");
    if (r.status == 200 && job_ended(r.body)) return r.body;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
}

struct VmTimes {
  std::string node;
  double full_s = 0, cutover_s = 0, done_at_s = 0;
  std::string error;
};

struct ThroughputResult {
  int nodes = 0, vms = 0;
  double seconds = 0, vms_per_hour = 0, full_median_s = 0, cutover_median_s = 0;
  std::map<std::string, int> per_node;
};

ThroughputResult run_throughput(const Options& o, MariadbServer& mariadb, const std::string& dir, int node_count) {
  const int64_t capacity = static_cast<int64_t>(o.disk_mib) << 20;
  std::string db_url = mariadb.create_database(fmt::format("bench_scale_{}", node_count));
  mk::cloudstack::test::SimServer sim{[&] {
    mk::cloudstack::test::SimOptions so;
    so.extra_oma_vms = node_count - 1;
    so.max_data_volumes = o.slots;
    return so;
  }()};
  std::string run_dir = fmt::format("{}/nodes-{}", dir, node_count);
  std::filesystem::create_directories(run_dir + "/bench-1");
  FakeVma vma{mk::test::make_psk_file(run_dir + "/bench-1/nbd-psk.keys", "oma")};
  Nodes nodes(run_dir, db_url, vma.url(), node_count, [&](int i) {
    return std::vector<std::string>{"--node-volume-slots", std::to_string(o.slots), "--node-cloudstack-vm-id",
                                    sim.oma_vm_id(i), "--volume-backend", "cloudstack", "--by-id-dir",
                                    sim.by_id_dir(i), "--cloudstack-allow-http", "--device-timeout", "30"};
  });
  auto admin = nodes.client(0);
  expect(admin->put("/api/v1/settings/cloudstack", sim.oma_settings().dump()), {200}, "CloudStack settings");
  json mappings = {{"mappings", {{{"source_network", "VM Network"},
                                  {"target_network_id", mk::cloudstack::test::seed::prod_network},
                                  {"keep_mac", true}}}}};
  expect(admin->put("/api/v1/network-mappings", mappings.dump()), {200}, "network mappings");

  // One source disk for every VM (the fake VMA maps sources by disk key), served by nbdkit.
  std::string source = run_dir + "/source.img";
  mk::test::write_random_at(source, 0, static_cast<uint64_t>(capacity), 42);
  const std::string source_sha = mk::test::sha256_file(source);
  mk::test::NbdkitOptions no;
  no.plugin = "file";
  no.args = {"file=" + source};
  no.read_only = true;
  mk::test::NbdkitServer source_server(no);
  vma.set_source("2000", source_server.uri());

  std::vector<std::string> vms;
  for (int i = 0; i < o.vms; ++i) {
    std::string vm = test_vm_uuid(i + 1);
    json body = vm_body(vm, 1, capacity);
    body["name"] = fmt::format("bench{:03d}", i + 1);
    body["nics"] = {{{"mac", fmt::format("00:50:56:aa:{:02x}:{:02x}", (i + 1) / 256, (i + 1) % 256)},
                     {"network", "VM Network"}}};
    expect(admin->post("/api/v1/vms", body.dump()), {201}, "adding VM " + vm);
    vma.add_source_vm(vm, body["name"], true);
    vms.push_back(vm);
  }

  // Timed: every VM placed, its full pass and its cutover, asked of the node holding it.
  std::vector<VmTimes> times(vms.size());
  auto t0 = Clock::now();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < vms.size(); ++i) {
    threads.emplace_back([&, i] {
      VmTimes& t = times[i];
      try {
        auto any = nodes.client(i % nodes.all().size());
        HttpReply p = any->post("/api/v1/vms/" + vms[i] + "/placement", "");
        expect(p, {200}, "placing VM " + vms[i]);
        if (!p.body["node_id"].is_string())
          throw mk::Error(fmt::format("VM {} waits for a node: {}", vms[i], p.body.dump()));
        t.node = p.body["node_id"].get<std::string>();
        auto api = nodes.client(t.node);
        auto started = Clock::now();
        HttpReply r = api->post("/api/v1/jobs", json{{"vm_id", vms[i]}, {"kind", "full"}}.dump());
        expect(r, {201}, "full pass of " + vms[i]);
        json full = wait_job(*api, r.body["job_id"].get<std::string>(), o.poll_ms);
        if (full["status"] != "completed") throw mk::Error("full pass " + full.dump().substr(0, 2000));
        t.full_s = seconds_since(started);
        started = Clock::now();
        r = api->post("/api/v1/vms/" + vms[i] + "/cutover", json{{"shutdown_timeout_seconds", 30}}.dump());
        expect(r, {201, 202}, "cutover of " + vms[i]);
        json cut = wait_job(*api, r.body["job_id"].get<std::string>(), o.poll_ms);
        if (cut["status"] != "completed") throw mk::Error("cutover " + cut.dump().substr(0, 2000));
        t.cutover_s = seconds_since(started);
        t.done_at_s = seconds_since(t0);
      } catch (const std::exception& e) {
        t.error = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  ThroughputResult res;
  res.nodes = node_count;
  res.vms = o.vms;
  res.seconds = seconds_since(t0);
  for (const auto& t : times) {
    if (!t.error.empty()) {
      std::string logs;
      for (const auto& n : nodes.all()) logs += fmt::format("\n--- {}:\n{}", n.id, mk::test::log_tail(n.log, 3000));
      throw mk::Error(fmt::format("{} node(s): a VM did not finish: {}{}", node_count, t.error, logs));
    }
  }

  // Untimed checks: every VM built in CloudStack once, every volume equal to the source.
  const json st = sim.state();
  std::map<std::string, int> built;
  for (const auto& v : st["virtualmachines"]) built[v["name"].get<std::string>()]++;
  for (int i = 0; i < o.vms; ++i) {
    std::string name = fmt::format("bench{:03d}", i + 1);
    if (built[name] != 1) throw mk::Error(fmt::format("VM {} was built {} time(s) in CloudStack", name, built[name]));
  }
  std::map<std::string, int> volumes_of;
  for (const auto& v : st["volumes"]) {
    std::string owner;
    for (const auto& t : v["tags"])
      if (t["key"] == mk::cloudstack::kTagVm) owner = t["value"];
    if (owner.empty()) continue;
    volumes_of[owner]++;
    std::string file = sim.dir() + "/state/volumes/" + v["id"].get<std::string>() + ".img";
    std::string copy = run_dir + "/check.img";
    std::filesystem::remove(copy);
    mk::test::write_at(copy, 0, mk::test::read_at(file, 0, static_cast<uint64_t>(capacity)));
    if (mk::test::sha256_file(copy) != source_sha)
      throw mk::Error(fmt::format("VM {}'s volume {} differs from its source", owner, v["id"].get<std::string>()));
  }
  for (const auto& vm : vms)
    if (volumes_of[vm] != 1) throw mk::Error(fmt::format("VM {} has {} volume(s), not 1", vm, volumes_of[vm]));
  auto violations = vma.violations();
  if (!violations.empty()) throw mk::Error("the fake VMA saw a protocol violation: " + violations[0]);

  std::vector<double> full, cut;
  for (const auto& t : times) {
    full.push_back(t.full_s);
    cut.push_back(t.cutover_s);
    res.per_node[t.node]++;
  }
  res.full_median_s = percentile(full, 0.5);
  res.cutover_median_s = percentile(cut, 0.5);
  res.vms_per_hour = res.seconds > 0 ? o.vms * 3600.0 / res.seconds : 0;
  return res;
}

struct LatencyResult {
  std::string node;
  int vms = 0, requests = 0;
  double p50_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;
  size_t reply_bytes = 0;
};

struct ApiResult {
  double seed_api_s = 0, seed_passes_s = 0;
  std::vector<LatencyResult> per_node;
};

ApiResult run_api(const Options& o, MariadbServer& mariadb, const std::string& dir) {
  ApiResult res;
  std::string db_url = mariadb.create_database("bench_scale_api");
  std::string run_dir = dir + "/api";
  std::filesystem::create_directories(run_dir);
  // No VMA and local volumes: the list is the database's work and the API's.
  Nodes nodes(run_dir, db_url, "http://127.0.0.1:9", o.api_nodes,
              [&](int) { return std::vector<std::string>{"--node-volume-slots", std::to_string(o.slots)}; });

  // 1,000 VMs of two 1 MiB disks through the API, from 4 clients.
  auto t0 = Clock::now();
  std::atomic<int> next{0};
  std::vector<std::string> errors(4);
  std::vector<std::thread> threads;
  for (int c = 0; c < 4; ++c) {
    threads.emplace_back([&, c] {
      auto api = nodes.client(0);
      for (int i; (i = next++) < o.api_vms;) {
        HttpReply r = api->post("/api/v1/vms", vm_body(test_vm_uuid(i + 1), 2, 1 << 20).dump());
        if (r.status != 201 && errors[c].empty()) errors[c] = fmt::format("adding VM {}: {}", i + 1, r.raw);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (!e.empty()) throw mk::Error(e);
  res.seed_api_s = seconds_since(t0);

  // Each VM's completed full pass with committed change IDs, as a pass leaves them: the
  // list then computes every VM's last pass, change-ID age and readiness.
  if (o.api_passes) {
    t0 = Clock::now();
    auto database = db::open_database(db_url);
    Repositories repos(*database);
    for (int i = 0; i < o.api_vms; ++i) {
      std::string vm = test_vm_uuid(i + 1);
      JobRecord j;
      j.job_id = new_uuid();
      j.vm_id = vm;
      j.kind = JobKind::Full;
      j.status = JobStatus::Committing;
      j.phase = "committing change IDs";
      j.created_at = now_ms() - 60000;
      std::vector<JobDiskRecord> disks(2);
      for (int d = 0; d < 2; ++d) {
        disks[d].job_id = j.job_id;
        disks[d].disk_key = std::to_string(2000 + d);
        disks[d].unit = d;
        disks[d].export_name = export_name(vm, d);
        disks[d].status = mk::protocol::DiskStatus::Completed;
        disks[d].phase = mk::protocol::DiskPhase::Done;
        disks[d].bytes_done = disks[d].bytes_total = 1 << 20;
        disks[d].change_id_new = fmt::format("cbt-{}-{}", j.job_id, disks[d].disk_key);
      }
      repos.jobs.create_job(j, disks);
      for (const auto& d : disks) repos.jobs.update_disk_progress(d);
      repos.jobs.commit_change_ids(j.job_id);
      repos.jobs.finish_job(j.job_id, JobStatus::Completed, std::nullopt);
    }
    res.seed_passes_s = seconds_since(t0);
  }

  for (size_t n = 0; n < nodes.all().size(); ++n) {
    auto api = nodes.client(n);
    LatencyResult l;
    l.node = nodes.all()[n].id;
    for (int w = 0; w < 3; ++w) api->get("/api/v1/vms");  // warm-up
    std::vector<double> ms;
    for (int r = 0; r < o.api_requests; ++r) {
      auto s = Clock::now();
      HttpReply reply = api->get("/api/v1/vms");
      ms.push_back(seconds_since(s) * 1000);
      if (reply.status != 200) throw mk::Error(fmt::format("GET /api/v1/vms on {}: HTTP {}", l.node, reply.status));
      l.vms = static_cast<int>(reply.body["vms"].size());
      l.reply_bytes = reply.raw.size();
    }
    if (l.vms != o.api_vms)
      throw mk::Error(fmt::format("GET /api/v1/vms on {} listed {} VMs, not {}", l.node, l.vms, o.api_vms));
    l.requests = o.api_requests;
    l.p50_ms = percentile(ms, 0.5);
    l.p99_ms = percentile(ms, 0.99);
    l.max_ms = *std::max_element(ms.begin(), ms.end());
    double sum = 0;
    for (double x : ms) sum += x;
    l.mean_ms = sum / static_cast<double>(ms.size());
    res.per_node.push_back(l);
  }
  return res;
}

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  in >> a >> b >> c;
  return a + " " + b + " " + c;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string counts = "1,3";
  CLI::App app{"oma-bench-scale: VMs per hour through one OMA node and several, and GET /api/v1/vms latency "
               "with many VMs (issue 18)"};
  app.add_option("--vms", o.vms, "VMs migrated (full pass + cutover) per node count (default 30)")
      ->check(CLI::Range(1, 999));
  app.add_option("--nodes", counts, "Node counts to compare, comma-separated (default 1,3)");
  app.add_option("--disk-mib", o.disk_mib, "Each VM's one disk, MiB (default 1)")->check(CLI::Range(1, 1024));
  app.add_option("--slots", o.slots, "Data-volume slots per node and the simulator's cap (default 32)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--poll-ms", o.poll_ms, "How often the client polls each job (default 250)")->check(CLI::Range(10, 10000));
  app.add_option("--api-vms", o.api_vms, "VMs in the database for the API latency (default 1000)")
      ->check(CLI::Range(1, 60000));
  app.add_option("--api-requests", o.api_requests, "Sequential GET /api/v1/vms per node (default 200)")
      ->check(CLI::Range(1, 100000));
  app.add_option("--api-nodes", o.api_nodes, "Nodes the latency is measured through (default 2)")
      ->check(CLI::Range(1, 8));
  app.add_flag("!--no-api-passes", o.api_passes, "Seed the API's VMs without a completed pass each");
  app.add_flag("--skip-throughput", o.skip_throughput, "Only the API latency");
  app.add_flag("--skip-api", o.skip_api, "Only the throughput");
  app.add_option("--json", o.json_out, "Write every figure to this file");
  app.add_flag("--keep", o.keep, "Keep the temporary directory (logs, databases)");
  CLI11_PARSE(app, argc, argv);
  o.node_counts.clear();
  for (size_t at = 0; at <= counts.size();) {
    size_t comma = std::min(counts.find(',', at), counts.size());
    int n = std::atoi(counts.substr(at, comma - at).c_str());
    if (n < 1 || n > 8) {
      fmt::print(stderr, "--nodes: expected counts from 1 to 8, got '{}'\n", counts);
      return 2;
    }
    o.node_counts.push_back(n);
    at = comma + 1;
  }

  // One disk per VM: every VM must find a node at once (a VM that waits in the queue
  // would measure the queue, and this client does not follow it).
  int fewest = *std::min_element(o.node_counts.begin(), o.node_counts.end());
  if (!o.skip_throughput && o.vms > o.slots * fewest) {
    fmt::print(stderr, "--vms {}: {} node(s) of {} slots hold at most {} one-disk VMs; raise --slots or lower --vms\n",
               o.vms, fewest, o.slots, o.slots * fewest);
    return 2;
  }

  auto dir = std::make_unique<mk::test::TempDir>("oma-bench-scale");
  json out = {{"vms", o.vms}, {"disk_mib", o.disk_mib}, {"poll_ms", o.poll_ms}};
  int rc = 0;
  try {
    MariadbServer mariadb;
    fmt::print("oma-bench-scale: one MariaDB {} on 127.0.0.1:{}, work in {}; load {}\n", "server", mariadb.port(),
               dir->path(), load_average());
    if (!o.skip_throughput) {
      std::vector<ThroughputResult> results;
      for (int k : o.node_counts) {
        fmt::print("throughput: {} VMs x 1 disk of {} MiB, full pass + cutover each, through {} node(s) ...\n", o.vms,
                   o.disk_mib, k);
        std::fflush(stdout);
        results.push_back(run_throughput(o, mariadb, dir->path(), k));
        const auto& r = results.back();
        std::string spread;
        for (const auto& [node, n] : r.per_node) spread += fmt::format(" {}:{}", node, n);
        fmt::print("  {} node(s): {:.1f} s for {} VMs = {:.0f} VMs/hour (median per VM: full pass {:.2f} s, cutover "
                   "{:.2f} s; VMs per node:{}); load {}\n",
                   k, r.seconds, r.vms, r.vms_per_hour, r.full_median_s, r.cutover_median_s, spread, load_average());
        std::fflush(stdout);
        out["throughput"].push_back({{"nodes", k},
                                     {"seconds", r.seconds},
                                     {"vms_per_hour", r.vms_per_hour},
                                     {"full_pass_median_s", r.full_median_s},
                                     {"cutover_median_s", r.cutover_median_s},
                                     {"vms_per_node", r.per_node}});
      }
      fmt::print("\n{:>6} {:>10} {:>10} {:>8}\n", "nodes", "seconds", "VMs/hour", "ratio");
      for (const auto& r : results)
        fmt::print("{:>6} {:>10.1f} {:>10.0f} {:>7.2f}x\n", r.nodes, r.seconds, r.vms_per_hour,
                   r.vms_per_hour / results.front().vms_per_hour);
      fmt::print("(ratio: VMs/hour against {} node(s), same machine, same run)\n\n", results.front().nodes);
    }
    if (!o.skip_api) {
      fmt::print("API latency: {} VMs ({} each) in the database, {} sequential GET /api/v1/vms per node ...\n",
                 o.api_vms, o.api_passes ? "2 disks and a completed full pass" : "2 disks", o.api_requests);
      std::fflush(stdout);
      ApiResult a = run_api(o, mariadb, dir->path());
      fmt::print("  seeded: {} VMs through the API in {:.1f} s ({:.0f} VMs/s){}\n", o.api_vms, a.seed_api_s,
                 o.api_vms / std::max(a.seed_api_s, 1e-9),
                 o.api_passes ? fmt::format(", their passes through the repositories in {:.1f} s", a.seed_passes_s)
                              : std::string());
      fmt::print("{:>10} {:>6} {:>9} {:>9} {:>9} {:>9} {:>10}\n", "node", "VMs", "p50 ms", "p99 ms", "max ms",
                 "mean ms", "reply KiB");
      for (const auto& l : a.per_node) {
        fmt::print("{:>10} {:>6} {:>9.1f} {:>9.1f} {:>9.1f} {:>9.1f} {:>10.0f}\n", l.node, l.vms, l.p50_ms, l.p99_ms,
                   l.max_ms, l.mean_ms, l.reply_bytes / 1024.0);
        out["api"].push_back({{"node", l.node},
                              {"vms", l.vms},
                              {"requests", l.requests},
                              {"p50_ms", l.p50_ms},
                              {"p99_ms", l.p99_ms},
                              {"max_ms", l.max_ms},
                              {"mean_ms", l.mean_ms},
                              {"reply_bytes", l.reply_bytes}});
      }
      out["api_seed_seconds"] = a.seed_api_s;
      fmt::print("(node bench-1 seeded the VMs; the others answer from the same database)\n");
    }
    out["load_after"] = load_average();
  } catch (const std::exception& e) {
    fmt::print(stderr, "oma-bench-scale: {}\n", e.what());
    rc = 2;
  }
  if (!o.json_out.empty()) {
    std::ofstream f(o.json_out);
    f << out.dump(2) << "\n";
  }
  if (o.keep) {
    fmt::print("kept {}\n", dir->path());
    (void)dir.release();  // not removed
  }
  return rc;
}
