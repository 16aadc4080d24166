// FakeVma: a strict stand-in for the VMA's HTTP API (the VMA is another issue), serving
// the protocol documented in src/oma/vma/vma_client.h on 127.0.0.1 at a free port.
//
// Strict: a replicate request with a missing, extra or mistyped field, an export name
// that is not migration-vm-{vm_id}-disk{unit}, or change IDs that contradict the kind (a
// full pass has none; an incremental one has at least one: a grown disk has none)
// is answered 400 and recorded in violations(); tests assert there are none.
//
// Two ways to make progress:
//  * real copies: set_source(disk_key, uri) before the job; on replicate the fake runs
//    `migratekit copy SOURCE nbds://HOST:PORT/EXPORT --target-tls-psk PSK` per disk and
//    reports the engine's own JSON progress; a disk completes when its copy exits 0;
//  * scripted: set_disk(job, disk_key, progress) decides what progress reports.
// restart() simulates a VMA restart (new instance id, jobs forgotten); go_silent()
// stops answering.
//
// Source VMs for cutover: add_source_vm() makes a VM known to /discover, /preflight,
// /power and /cleanup (a VM it does not know has no findings). /power is strict too: the body must be exactly {"action", "timeout_seconds"}
// with a known action and a timeout of 1..86400 s, and a request that changes nothing
// (shutdown or off of a VM that is off, on of one that is on) is a violation: the OMA
// must look before it acts. fail_power() makes the next request of an action fail;
// ignore_shutdown() makes the guest ignore shutdowns, so that the VMA powers it off
// ("forced": true). Owns its server thread and copy processes. Thread-safe.
#pragma once

#include <httplib.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

class FakeVma {
 public:
  explicit FakeVma(std::string psk_file);
  ~FakeVma();

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void set_source(const std::string& disk_key, const std::string& uri);
  // When true, scripted jobs (no source) complete every disk as soon as they are polled.
  void set_auto_complete(bool on) { auto_complete_ = on; }
  void set_disk(const std::string& job_id, const std::string& disk_key, const nlohmann::json& progress);
  void restart();
  void forget(const std::string& job_id);  // this job only: as if it was lost
  void go_silent();

  void add_source_vm(const std::string& vm_id, const std::string& name, bool powered_on = true);
  bool powered_on(const std::string& vm_id);
  void ignore_shutdown(bool on) { ignore_shutdown_ = on; }
  void fail_power(const std::string& action, const std::string& message);
  void set_leftover_snapshots(const std::string& vm_id, int n);
  // What /discover and /preflight report for a source VM (none unless set): JSON findings.
  void set_findings(const std::string& vm_id, const nlohmann::json& findings);
  // The disks /discover reports for a source VM (none unless set): JSON disks.
  void set_source_disks(const std::string& vm_id, const nlohmann::json& disks);
  // "shutdown <vm>", "on <vm>", "cleanup <vm>" in order.
  std::vector<std::string> power_calls();

  std::vector<std::string> violations();
  std::vector<nlohmann::json> replicate_requests();
  std::vector<std::string> stopped_jobs();
  int polls() const { return polls_.load(); }
  bool knows(const std::string& job_id);

 private:
  struct Disk {
    std::string key, export_name;
    nlohmann::json scripted;  // null unless set_disk()
    std::unique_ptr<Subprocess> copy;
    std::string progress_file;
    int64_t capacity = 0;
  };
  struct Job {
    std::string vm_id;
    std::vector<std::unique_ptr<Disk>> disks;
    bool stopped = false;
  };
  void handle_replicate(const httplib::Request& req, httplib::Response& res);
  void handle_progress(const httplib::Request& req, httplib::Response& res);
  void handle_stop(const httplib::Request& req, httplib::Response& res);
  void handle_power(const httplib::Request& req, httplib::Response& res);
  void handle_cleanup(const httplib::Request& req, httplib::Response& res);
  void handle_discover(const httplib::Request& req, httplib::Response& res);
  void handle_preflight(const httplib::Request& req, httplib::Response& res);
  struct SourceVm {
    std::string name;
    bool on = true;
    int leftover_snapshots = 0;
    nlohmann::json findings = nlohmann::json::array();
    nlohmann::json disks = nlohmann::json::array();
  };
  std::string check_request(const nlohmann::json& j);
  nlohmann::json disk_progress(const std::string& job_id, Disk& d);

  std::string psk_;
  mk::test::TempDir dir_{"mk-fake-vma"};
  std::mutex mu_;  // guards everything below
  std::map<std::string, std::string> sources_;
  std::map<std::string, Job> jobs_;
  std::vector<std::string> violations_;
  std::vector<nlohmann::json> requests_;
  std::vector<std::string> stopped_;
  std::map<std::string, SourceVm> source_vms_;
  std::map<std::string, std::string> power_failures_;  // action -> error message
  std::vector<std::string> power_calls_;
  std::atomic<bool> ignore_shutdown_{false};
  std::string instance_;
  int generation_ = 0;
  std::atomic<bool> auto_complete_{false};
  std::atomic<int> polls_{0};
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace mk::oma::test
