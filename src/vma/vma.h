// Vma: the VMA service assembled from its configuration: the state directory, the
// vCenter connection, the job store and runner (recovering interrupted jobs), the
// removal of every snapshot of ours left by an earlier run, and the API.
//
// start() recovers jobs, removes leftover snapshots (if vCenter cannot be reached yet,
// a background thread keeps trying, and each pass removes its VM's leftovers anyway),
// then listens and writes the port to STATE/api.port. Owns everything it builds.
// start/stop from one thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "vma/api/api_server.h"
#include "vma/config.h"
#include "vma/runner/job_runner.h"
#include "vma/tunnel_state.h"
#include "vma/vcenter/vcenter.h"

namespace mk::vma {

class Vma {
 public:
  // `tunnel` may be empty: health then reports the tunnel down, "no tunnel configured".
  Vma(VmaConfig config, TunnelStateProvider tunnel = {});
  // With the tunnels to several OMA nodes (tunnel_state.h).
  Vma(VmaConfig config, Tunnels tunnels);
  ~Vma();
  void start();
  void stop();

  int api_port() const { return api_ ? api_->port() : 0; }
  const std::string& instance() const { return instance_; }

 private:
  bool cleanup_snapshots();  // true once done
  void cleanup_loop();

  VmaConfig config_;
  Tunnels tunnels_;
  std::string instance_;
  std::unique_ptr<VCenter> vcenter_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<JobRunner> runner_;
  std::unique_ptr<api::ApiServer> api_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::thread cleanup_;
};

}  // namespace mk::vma
