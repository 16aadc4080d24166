// FakeVma: a strict stand-in for the VMA's HTTP API (the VMA is another issue), serving
// the protocol documented in src/oma/vma/vma_client.h on 127.0.0.1 at a free port.
//
// Strict: a replicate request with a missing, extra or mistyped field, an export name
// that is not migration-vm-{vm_id}-disk{unit}, or change IDs that contradict the kind
// is answered 400 and recorded in violations(); tests assert there are none.
//
// Two ways to make progress:
//  * real copies: set_source(disk_key, uri) before the job; on replicate the fake runs
//    `migratekit copy SOURCE nbds://HOST:PORT/EXPORT --target-tls-psk PSK` per disk and
//    reports the engine's own JSON progress; a disk completes when its copy exits 0;
//  * scripted: set_disk(job, disk_key, progress) decides what progress reports.
// restart() simulates a VMA restart (new instance id, jobs forgotten); go_silent()
// stops answering. Owns its server thread and copy processes. Thread-safe.
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
  std::string instance_;
  int generation_ = 0;
  std::atomic<bool> auto_complete_{false};
  std::atomic<int> polls_{0};
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace mk::oma::test
