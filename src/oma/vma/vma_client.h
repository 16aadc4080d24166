// VmaClient: the OMA's calls to the VMA (VMware Migration Appliance), which the OMA
// reaches through the SSH reverse tunnel (OMA 127.0.0.1:9081 -> VMA 127.0.0.1:8081).
// The VMA implements the other side of this protocol (its own issue); HttpVmaClient is
// the real client, and the OMA tests run it against a strict fake VMA server.
//
// Protocol (JSON over HTTP, all under /api/v1; unknown fields are ignored by the OMA
// and must not be relied on):
//
//   POST /api/v1/replicate                       start copying one job's disks
//     {"job_id": "<uuid>", "vm_id": "<uuid>", "kind": "full" | "incremental",
//      "nbd": {"host": "10.0.0.5", "port": 10809, "tls": "psk"},
//      "disks": [{"disk_key": "2000", "unit": 0, "capacity_bytes": 10737418240,
//                 "export": "migration-vm-<uuid>-disk0",
//                 "change_id_base": "52 3c.../12" | null}]}     null = full copy
//     A full pass has no base; an incremental one has at least one (a disk grown since the
//     last pass is copied in full within it).
//     -> 202 {"job_id": "<uuid>", "vma_instance": "<boot id>"}
//     Idempotent: the same job_id again answers 202 (or 409 {"error"} naming the job,
//     which the OMA also takes as "already running") without starting a second copy.
//
//   GET /api/v1/progress/{job_id}
//     -> 200 {"job_id": "<uuid>", "vma_instance": "<boot id>",
//             "disks": [{"disk_key": "2000", "status": "pending"|"copying"|"completed"|"failed",
//                        "phase": "copying", "bytes_done": N, "bytes_total": N,
//                        "throughput_bps": X, "eta_seconds": X,
//                        "change_id": "<new change ID, when completed>",
//                        "error": "<message, when failed>"}]}
//     -> 404 {"error": "..."}: the VMA does not know the job (it restarted).
//     vma_instance changes when the VMA restarts; the OMA fails a job whose VMA
//     instance changed, since the copy that was running is gone.
//
//   POST /api/v1/stop/{job_id}    -> 200 {"job_id": "<uuid>", "stopped": true}
//     Cancels the copy; the VMA removes the job's snapshot before answering.
//
//   POST /api/v1/cleanup/{vm_id}  -> 200 {"vm_id": "<uuid>", "snapshots_removed": N}
//     Removes every snapshot of ours on that VM (after a crash, before a cutover).
//
//   POST /api/v1/power/{vm_id}    {"action": "shutdown" | "off" | "on", "timeout_seconds": 300}
//     -> 200 {"vm_id": "<uuid>", "power_state": "poweredOff" | "poweredOn", "forced": false}
//     shutdown = guest shutdown, then power off if the guest is still on after
//     timeout_seconds ("forced": true). Answers when the VM is in the asked state.
//
//   GET /api/v1/discover
//     -> 200 {"vcenter": "vc.example", "vms": [{"vm_id": "<instance uuid>", "name": "web01",
//             "datacenter": "DC0", "power_state": "poweredOn", "cpus": 2, "memory_mb": 4096,
//             "guest_os": "ubuntu64Guest",
//             "disks": [{"disk_key": "2000", "unit": 0, "label": "Hard disk 1",
//                        "capacity_bytes": 10737418240}],
//             "nics": [{"key": "4000", "mac": "00:50:56:aa:bb:cc", "network": "VM Network"}],
//             "findings": [<finding>]}]}      (absent from older VMAs: none)
//
//   GET /api/v1/preflight/{vm_id}
//     -> 200 {"vm_id": "<uuid>", "findings": [{"code": "independent-disk", "disk_key": "2001" | null,
//             "problem": "...", "remedy": "...", "text": "VM web01 disk Hard disk 2 (...): ..."}]}
//     What would refuse a pass (independent, RDM or shared disks, snapshots of its own,
//     encryption, CBT that cannot be enabled, ...), read afresh; 404 for an unknown VM.
//
//   GET /api/v1/health
//     -> 200 {"status": "ok" | "degraded", "vma_instance": "<boot id>",
//             "vcenter": {"reachable": true, "error": null},
//             "tunnel": {"state": "up" | "connecting" | "down", "since": <unix s>, "error": null}}
//
// vm_id is the vSphere instance UUID. Every request carries "Authorization: Bearer
// <token>", the token the OMA issued at pairing; the VMA answers 401 without it.
// Errors are {"error": "<what failed, on which VM/disk, what to do>"} with 4xx/5xx.
//
// Thread-safe: each call opens its own HTTP connection.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"

namespace mk::oma {

struct ReplicateDisk {
  std::string disk_key, export_name;
  int64_t unit = 0, capacity_bytes = 0;
  std::optional<std::string> change_id_base;
};

struct ReplicateRequest {
  std::string job_id, vm_id, kind;
  std::string nbd_host;
  int nbd_port = 10809;
  std::string tls = "psk";
  std::vector<ReplicateDisk> disks;
};

struct DiskProgress {
  std::string disk_key, status, phase;
  int64_t bytes_done = 0, bytes_total = 0;
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> change_id, error;
};

struct JobProgress {
  std::string job_id, vma_instance;
  std::vector<DiskProgress> disks;
};

struct PowerResult {
  std::string power_state;  // "poweredOff" | "poweredOn"
  bool forced = false;      // shutdown ended with a power off
};

struct DiscoveredDisk {
  std::string disk_key, label;
  int64_t unit = 0, capacity_bytes = 0;
};
struct DiscoveredNic {
  std::string key, mac, network;
};
// What would refuse a pass of the VM (the VMA's vSphere preflight): code, the disk (none
// for the whole VM), what is wrong, what to do, and all of it in one line.
struct PreflightFinding {
  std::string code;
  std::optional<std::string> disk_key;
  std::string problem, remedy, text;
};
struct DiscoveredVm {
  std::string vm_id, name, datacenter, power_state, guest_os;
  int64_t cpus = 0, memory_mb = 0;
  std::vector<DiscoveredDisk> disks;
  std::vector<DiscoveredNic> nics;
  std::vector<PreflightFinding> findings;  // empty: nothing known refuses a pass
};
struct Discovery {
  std::string vcenter;
  std::vector<DiscoveredVm> vms;
};

struct VmaHealth {
  std::string status, vma_instance;
  bool vcenter_reachable = false;
  std::optional<std::string> vcenter_error;
  std::string tunnel_state;  // "up" | "connecting" | "down"
  int64_t tunnel_since = 0;
  std::optional<std::string> tunnel_error;
};

// The VMA answered that it does not know a job (404 on progress).
class VmaJobUnknown : public mk::Error {
 public:
  using mk::Error::Error;
};
// The VMA could not be reached or did not answer in time (tunnel down, VMA stopped).
class VmaUnreachable : public mk::Error {
 public:
  using mk::Error::Error;
};

class VmaClient {
 public:
  virtual ~VmaClient() = default;
  // Returns the VMA instance that accepted the job.
  virtual std::string replicate(const ReplicateRequest& request) = 0;
  virtual JobProgress progress(const std::string& job_id) = 0;
  virtual void stop(const std::string& job_id) = 0;
  virtual int cleanup(const std::string& vm_id) = 0;  // snapshots removed
  // action: "shutdown" | "off" | "on".
  virtual PowerResult power(const std::string& vm_id, const std::string& action, int timeout_seconds) = 0;
  virtual Discovery discover() = 0;
  // The VM's preflight findings, read afresh from vCenter; nothing is changed.
  virtual std::vector<PreflightFinding> preflight(const std::string& vm_id) = 0;
  virtual VmaHealth health() = 0;
  virtual std::string describe() const = 0;
};

// HTTP client to base_url ("http://127.0.0.1:9081") with the pairing token (empty: no
// Authorization header). Answers that break the protocol (wrong types, missing fields,
// a job_id that is not the one asked for) throw mk::Error.
class HttpVmaClient : public VmaClient {
 public:
  HttpVmaClient(std::string base_url, std::chrono::milliseconds timeout, std::string token = "");
  std::string replicate(const ReplicateRequest& request) override;
  JobProgress progress(const std::string& job_id) override;
  void stop(const std::string& job_id) override;
  int cleanup(const std::string& vm_id) override;
  PowerResult power(const std::string& vm_id, const std::string& action, int timeout_seconds) override;
  Discovery discover() override;
  std::vector<PreflightFinding> preflight(const std::string& vm_id) override;
  VmaHealth health() override;
  std::string describe() const override { return "VMA at " + base_url_; }

 private:
  std::string base_url_;
  std::chrono::milliseconds timeout_;
  std::string token_;
};

}  // namespace mk::oma
