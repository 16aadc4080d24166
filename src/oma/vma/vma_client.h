// VmaClient: the OMA's calls to the VMA (VMware Migration Appliance), which the OMA
// reaches through the SSH reverse tunnel (OMA 127.0.0.1:9081 -> VMA 127.0.0.1:8081).
// The protocol — routes, messages, validation, version — is src/protocol/ (see
// messages.h); HttpVmaClient speaks it, and the OMA tests run it against the real VMA
// and against a fake VMA that uses the same module.
//
// Every call is signed with the VMA's token (protocol/request_auth.h; the token itself is
// never sent) and carries the protocol version header; the answer's version is checked
// before anything else: another version throws protocol::VersionMismatch (naming both
// versions and what to upgrade). An answer not signed with the token throws
// VmaUnreachable: whoever answered is not this VMA (another process on the tunnel port). An answer that
// breaks the protocol (a field missing, mistyped, out of range, unknown; a job_id or
// vm_id that is not the one asked for) throws mk::Error naming the field; an error
// status throws mk::Error with the VMA's message.
//
// Progress can be long-polled (wait_progress): the call's timeout is then the client's
// plus the wait, so a held answer is never taken for a VMA that went silent.
//
// Thread-safe: each call opens its own HTTP connection.
#pragma once

#include <chrono>
#include <functional>
#include <mutex>
#include <string>

#include "common/error.h"
#include "protocol/messages.h"
#include "protocol/routes.h"

namespace mk::oma {

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

// Ends a call in progress at once from another thread (JobManager: shutdown, cancel):
// the call then throws VmaUnreachable, and a call made after abort() fails at once.
// Thread-safe.
class CallAbort {
 public:
  void abort();
  bool aborted();
  // For clients: `stop` ends the call in progress; run by abort() while armed. False
  // (do not make the call) when aborted already.
  bool arm(std::function<void()> stop);
  void disarm();

 private:
  std::mutex mu_;
  bool aborted_ = false;
  std::function<void()> stop_;
};

class VmaClient {
 public:
  virtual ~VmaClient() = default;
  // Returns the VMA instance that accepted the job. A job the VMA already knows (the call
  // sent again after an OMA restart) is accepted again, nothing started: the OMA follows
  // the copy that runs. A refusal (409: the job id belongs to another VM there) throws.
  virtual std::string replicate(const protocol::ReplicateRequest& request) = 0;
  // Throws VmaJobUnknown when the VMA does not know the job.
  virtual protocol::JobProgress progress(const std::string& job_id) = 0;
  // The same as a long poll (protocol/messages.h): the VMA answers once the job's
  // revision differs from wait.after, or after wait.wait_ms. An answer without a
  // revision was not held (a busy VMA): poll again at your own interval. `abort`
  // (may be null) ends the call from another thread. Throws as progress().
  virtual protocol::JobProgress wait_progress(const std::string& job_id, const protocol::ProgressWait& wait,
                                              CallAbort* abort) = 0;
  // A job the VMA does not know counts as stopped.
  virtual void stop(const std::string& job_id) = 0;
  virtual int cleanup(const std::string& vm_id) = 0;  // snapshots removed
  virtual protocol::PowerReply power(const std::string& vm_id, protocol::PowerAction action, int timeout_seconds) = 0;
  virtual protocol::Discovery discover() = 0;
  // The VM's preflight findings, read afresh from vCenter; nothing is changed.
  virtual std::vector<protocol::PreflightFinding> preflight(const std::string& vm_id) = 0;
  // One VM as discover() shows it (disks, NICs, power, findings), read afresh from
  // vCenter without listing the inventory. Throws mk::Error for a VM the VMA does not see.
  virtual protocol::DiscoveredVm describe_vm(const std::string& vm_id) = 0;
  virtual protocol::Health health() = 0;
  // Several OMA nodes: tells the VMA the service's live nodes (it holds a tunnel to each
  // and answers with their states).
  virtual protocol::ServiceNodesReply set_service_nodes(const protocol::ServiceNodes& nodes) = 0;
  virtual std::string describe() const = 0;
};

// HTTP client to base_url ("http://127.0.0.1:9081") with the pairing token (empty:
// unsigned calls, answers not checked; for tests of the VMA's refusals). `protocol_version` is the version it speaks (tests speak
// others to see both appliances refuse).
class HttpVmaClient : public VmaClient {
 public:
  HttpVmaClient(std::string base_url, std::chrono::milliseconds timeout, std::string token = "",
                int protocol_version = protocol::kVersion);
  std::string replicate(const protocol::ReplicateRequest& request) override;
  protocol::JobProgress progress(const std::string& job_id) override;
  protocol::JobProgress wait_progress(const std::string& job_id, const protocol::ProgressWait& wait,
                                      CallAbort* abort) override;
  void stop(const std::string& job_id) override;
  int cleanup(const std::string& vm_id) override;
  protocol::PowerReply power(const std::string& vm_id, protocol::PowerAction action, int timeout_seconds) override;
  protocol::Discovery discover() override;
  std::vector<protocol::PreflightFinding> preflight(const std::string& vm_id) override;
  protocol::DiscoveredVm describe_vm(const std::string& vm_id) override;
  protocol::Health health() override;
  protocol::ServiceNodesReply set_service_nodes(const protocol::ServiceNodes& nodes) override;
  std::string describe() const override { return "VMA at " + base_url_; }

 private:
  struct Answer {
    int status = 0;
    std::string body;
  };
  // One request; throws VmaUnreachable without an answer (or when `abort` ended it),
  // VersionMismatch for an answer of another protocol version. `query` ("a=1&b=2" or
  // "") follows the path, unsigned (request_auth.h signs the path).
  Answer call(const protocol::Route& route, const std::string& id, const std::string& body, const std::string& where,
              std::chrono::milliseconds timeout, const std::string& query = "", CallAbort* abort = nullptr) const;
  protocol::JobProgress progress_answer(const Answer& a, const std::string& job_id, const std::string& where) const;

  std::string base_url_;
  std::chrono::milliseconds timeout_;
  std::string token_;
  int protocol_version_;
};

}  // namespace mk::oma
