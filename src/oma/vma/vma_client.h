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
  virtual std::string describe() const = 0;
};

// HTTP client to base_url ("http://127.0.0.1:9081"). Answers that break the protocol
// (wrong types, missing fields, a job_id that is not the one asked for) throw mk::Error.
class HttpVmaClient : public VmaClient {
 public:
  HttpVmaClient(std::string base_url, std::chrono::milliseconds timeout);
  std::string replicate(const ReplicateRequest& request) override;
  JobProgress progress(const std::string& job_id) override;
  void stop(const std::string& job_id) override;
  std::string describe() const override { return "VMA at " + base_url_; }

 private:
  std::string base_url_;
  std::chrono::milliseconds timeout_;
};

}  // namespace mk::oma
