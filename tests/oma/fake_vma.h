// FakeVma: a stand-in for the VMA's HTTP API on 127.0.0.1 at a free port, for the OMA
// tests. It speaks the protocol through src/protocol (routes, decode/encode, version
// header): every request is decoded strictly, and one the protocol refuses is answered
// like the VMA answers it (400 naming the field, 426 for another protocol version) and
// recorded in violations(); tests assert there are none. What is left here is
// behaviour:
//
//  * real copies: set_source(disk_key, uri) before the job; on replicate the fake runs
//    `migratekit copy SOURCE nbds://HOST:PORT/EXPORT --target-tls-psk PSK` per disk and
//    reports the engine's own progress; a disk completes when its copy exits 0;
//  * scripted: set_disk(job, progress) decides what progress reports for that disk;
//    set_auto_complete(true) completes disks without a source as soon as polled. Like
//    an honest VMA, the fake first writes what a completed disk reports: bytes_done -
//    bytes_resumed bytes (an earlier run wrote the resumed ones) through NBD into the
//    disk's export, rewriting what the export holds from offset 0 (holes and zeroes as
//    write-zeroes; repeated over the export when it is smaller), then a flush, before
//    the answer that reports it completed (the OMA checks the export's written-bytes
//    count against bytes_done). lie(...) makes it report completions without writing
//    (Lie::Unwritten) or after writing half (Lie::Half): a compromised VMA;
//  * a replicate call for a job id it knows is answered as the VMA answers it: 202 with
//    its instance and nothing started (same VM), 409 for another VM;
//  * restart() simulates a VMA restart (new instance id, jobs forgotten), forget() loses
//    one job, go_silent() stops answering, speak_version() makes it another release;
//  * hold_progress(true): progress is long-polled as a VMA of protocol 6 does it
//    (?after=R&wait_ms=N): the answer comes when it differs from the last one given
//    for the job (a new revision) or at the bound, with the revision; set_disk wakes it,
//    real copies and automatic completions are looked at every 20 ms. Without it (the
//    default) progress answers at once without a revision, as a busy VMA does;
//    held_polls() counts the calls held;
//  * health: always ok (vCenter reachable, tunnel up);
//  * require_signatures(token): every request must then be signed with the token as the
//    VMA requires (protocol/request_auth.h; else 401 and a violation), and answers are
//    signed;
//  * source VMs for cutover: add_source_vm() makes a VM known to discover, power and
//    cleanup. A power request that changes nothing (shutdown or off of a VM that is off,
//    on of one that is on) is a violation: the OMA must look before it acts.
//    ignore_shutdown() makes the guest ignore shutdowns, so that the VMA powers it off
//    ("forced": true); fail_power_on() makes power "on" fail as a vCenter fault does. Cleanup of a VM whose job is copying is a violation too.
//
// Source VMs for cutover: add_source_vm() makes a VM known to discover, preflight,
// describe (GET /api/v1/vms/{vm_id}), power and cleanup; set_findings() and
// set_source_disks() say what discover, preflight and describe report for it (a VM the
// fake does not know has no findings and no disks). discover_calls() counts whole-
// inventory discoveries, which a pass must not need.
//
// Owns its server thread and copy processes. Thread-safe.
#pragma once

#include <httplib.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/subprocess.h"
#include "protocol/messages.h"
#include "protocol/request_auth.h"
#include "protocol/routes.h"
#include "support/temp_dir.h"

namespace mk::oma::test {

// A disk's progress for FakeVma::set_disk: the phase that goes with `status`, 4096 B/s
// and 7 s to go.
protocol::DiskProgress disk_state(const std::string& key, protocol::DiskStatus status, int64_t done, int64_t total,
                                  const std::string& change_id = "");

class FakeVma {
 public:
  enum class Lie { None, Unwritten, Half };

  explicit FakeVma(std::string psk_file);
  ~FakeVma();

  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  void set_source(const std::string& disk_key, const std::string& uri);
  // The source of one VM's disk (many VMs with the same disk keys); wins over the above.
  void set_source(const std::string& vm_id, const std::string& disk_key, const std::string& uri) {
    set_source(vm_id + "/" + disk_key, uri);
  }
  // When true, scripted jobs (no source) complete every disk as soon as they are polled.
  void set_auto_complete(bool on) { auto_complete_ = on; }
  // When true, real copies report "copying" even once their copy exited, until set
  // false again: a pass held in the middle (a test kills the OMA then).
  void hold_copies(bool on) { hold_copies_ = on; }
  // How scripted and automatic completions are backed by writes from now on.
  void lie(Lie how) { lie_ = how; }
  // The OMA's export server now listens on `port` (a test restarted the OMA, which chose
  // another free port): completions are written there, not to the replicate request's.
  void serve_exports_on(int port) { exports_port_ = port; }
  // What progress reports for the disk progress.disk_key of the job.
  void set_disk(const std::string& job_id, const protocol::DiskProgress& progress);
  void hold_progress(bool on) { hold_progress_ = on; }
  int held_polls() const { return held_polls_.load(); }
  void restart();
  // A VMA that restarted and resumes its passes: a new instance that still knows every
  // job, each job's revision counted from 0 again.
  void restart_resuming();
  void forget(const std::string& job_id);  // this job only: as if it was lost
  // Stops answering. A replicate call held by hang_replicate() ends without an answer
  // (the connection closes before the body).
  void go_silent();
  // From now on replicate accepts the job (knows() it, as a VMA that starts copying)
  // but does not answer until go_silent(): a call that times out on the OMA's side.
  void hang_replicate() { hang_replicate_ = true; }
  // The protocol version the fake speaks (and requires) from now on.
  void speak_version(int version) { version_ = version; }
  void require_signatures(const std::string& token) {
    std::lock_guard lock(mu_);
    token_ = token;
  }

  void add_source_vm(const std::string& vm_id, const std::string& name, bool powered_on = true);
  bool powered_on(const std::string& vm_id);
  void ignore_shutdown(bool on) { ignore_shutdown_ = on; }
  // Someone powers the VM on in vSphere as the VMA accepts its next pass.
  void power_on_at_next_pass(const std::string& vm_id) {
    std::lock_guard lock(mu_);
    power_on_at_pass_ = vm_id;
  }
  // Power "on" fails as the VMA reports a vCenter fault (502 "VM ...: power on failed:
  // TEXT", the VM stays off) until called again with "" .
  void fail_power_on(const std::string& text) {
    std::lock_guard lock(mu_);
    power_on_fault_ = text;
  }
  // What discover and preflight report for a source VM (none unless set).
  void set_findings(const std::string& vm_id, std::vector<protocol::PreflightFinding> findings);
  // vSphere's firmware and secure boot that discover and describe report ("": as an
  // older VMA, which says nothing).
  void set_firmware(const std::string& vm_id, const std::string& firmware, bool secure_boot) {
    std::lock_guard lock(mu_);
    source_vms_.at(vm_id).firmware = firmware;
    source_vms_.at(vm_id).secure_boot = secure_boot;
  }
  // The disks discover reports for a source VM (none unless set).
  void set_source_disks(const std::string& vm_id, std::vector<protocol::DiscoveredDisk> disks);
  // "shutdown <vm>", "on <vm>", "cleanup <vm>" in order.
  std::vector<std::string> power_calls();

  std::vector<std::string> violations();
  std::vector<protocol::ReplicateRequest> replicate_requests();
  std::vector<std::string> stopped_jobs();
  int polls() const { return polls_.load(); }
  int discover_calls() const { return discover_calls_.load(); }
  bool knows(const std::string& job_id);
  // How many times a copy was started for the job (a repeated replicate of a job it
  // knows starts none, as on the VMA).
  int starts(const std::string& job_id);

 private:
  struct Disk {
    protocol::ReplicateDisk request;
    std::optional<protocol::DiskProgress> scripted;
    std::unique_ptr<Subprocess> copy;
    std::string progress_file;
    std::optional<std::string> write_error;  // writing a reported completion failed
    bool written = false;                    // a completion's bytes were written
  };
  struct Job {
    std::string vm_id;
    protocol::NbdTarget nbd;
    std::vector<std::unique_ptr<Disk>> disks;
    int64_t revision = 0;    // raised when an answer differs from the last one (hold_progress)
    nlohmann::json answered;  // the last answer's body, without its revision
  };
  struct SourceVm {
    std::string name;
    bool on = true;
    std::vector<protocol::PreflightFinding> findings;
    std::vector<protocol::DiscoveredDisk> disks;
    std::string firmware;  // "" (as an older VMA), "bios", "efi"
    bool secure_boot = false;
  };
  // An answer: the status and the message to encode.
  struct Reply {
    int status = 200;
    nlohmann::json body;
    bool abort = false;  // close the connection instead of sending the body
  };
  using Handler = Reply (FakeVma::*)(const httplib::Request& req);

  void route(const protocol::Route& r, Handler h);
  std::optional<protocol::SignedRequest> check_signature(const httplib::Request& req);
  Reply replicate(const httplib::Request& req);
  Reply start_job(const protocol::ReplicateRequest& r);
  Reply progress(const httplib::Request& req);
  // The job's progress now, its revision raised if it differs from the last answer. mu_ held.
  protocol::JobProgress job_progress(const std::string& job_id, Job& job);
  Reply stop(const httplib::Request& req);
  Reply power(const httplib::Request& req);
  Reply cleanup(const httplib::Request& req);
  Reply discover(const httplib::Request& req);
  Reply preflight(const httplib::Request& req);
  Reply describe(const httplib::Request& req);
  protocol::DiscoveredVm discovered(const std::string& vm_id, const SourceVm& vm) const;
  Reply health(const httplib::Request& req);
  protocol::DiskProgress disk_progress(const std::string& job_id, Disk& d);
  protocol::DiskProgress completion(const Job& job, Disk& d, protocol::DiskProgress p);

  std::string psk_;
  mk::test::TempDir dir_{"mk-fake-vma"};
  std::mutex mu_;  // guards everything below
  std::map<std::string, std::string> sources_;
  std::map<std::string, Job> jobs_;
  std::vector<std::string> violations_;
  std::vector<protocol::ReplicateRequest> requests_;
  std::vector<std::string> stopped_;
  std::map<std::string, int> started_;  // copies started per job id
  std::map<std::string, SourceVm> source_vms_;
  std::string token_;  // require_signatures()
  protocol::NonceCache nonces_;
  std::vector<std::string> power_calls_;
  std::string power_on_at_pass_;  // power_on_at_next_pass()
  std::atomic<bool> ignore_shutdown_{false};
  std::string power_on_fault_;  // fail_power_on()
  std::atomic<int> version_{protocol::kVersion};
  std::string instance_;
  int generation_ = 0;
  std::atomic<bool> auto_complete_{false};
  std::atomic<bool> hold_copies_{false};
  std::atomic<Lie> lie_{Lie::None};
  std::atomic<int> exports_port_{0};  // serve_exports_on(); 0: the replicate request's
  std::atomic<int> polls_{0};
  std::atomic<bool> hold_progress_{false};
  std::atomic<int> held_polls_{0};
  std::condition_variable changed_cv_;  // with mu_: set_disk, restart, forget, go_silent
  std::atomic<bool> hang_replicate_{false};
  bool is_silent();
  std::mutex silent_mu_;  // guards silent_
  std::condition_variable silent_cv_;
  bool silent_ = false;
  std::atomic<int> discover_calls_{0};
  httplib::Server server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace mk::oma::test
