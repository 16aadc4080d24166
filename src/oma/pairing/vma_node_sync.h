// VmaNodeSync: one OMA node of several (issue 18, item 4) keeping its side of every
// VMA's tunnels in step with the shared database, in a background round every
// `interval`:
//
//  1. Access. When the VMAs' rows changed (approved, revoked, enrolled) the node
//     rewrites its own authorized_keys file and NBD access from the database
//     (PairingService::sync_access), so every node's sshd takes every approved VMA, not
//     only the node where the operator approved it. A VMA revoked on another node has
//     its live session on this node ended too (PairingService::end_session): a revoked
//     VMA loses every tunnel, not one.
//  2. Node list. The service's live nodes (NodeRepository, by the database's clock; a
//     node with no pinned host key yet is left out) are sent to every approved VMA this
//     node reaches through its own tunnel (POST /api/v1/service-nodes), when the list
//     changed since this node last told that VMA, or `resend` later in any case (a VMA
//     restored from a backup, a list lost). So a node that registers is picked up by
//     the VMAs through the nodes they already reach, and a node whose lease expired is
//     dropped by them, with no channel between nodes: each node only calls VMAs on its
//     own loopback, as for every other control call.
//
// Nothing here is forwarded between nodes and nothing trusts another node: the database
// is the only thing they share. Failures (a VMA that does not answer, an older VMA) are
// logged once per change and retried next round.
//
// Does not own its collaborators. Owns its thread; start/stop from one thread, round()
// from one thread at a time.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "oma/db/vma_repository.h"
#include "oma/pairing/pairing_service.h"

namespace mk::oma {

struct VmaNodeSyncOptions {
  std::chrono::milliseconds interval{5000};
  std::chrono::milliseconds resend{60000};
};

class VmaNodeSync {
 public:
  VmaNodeSync(PairingService& pairing, VmaRepository& vmas, VmaNodeSyncOptions options = {});
  ~VmaNodeSync();
  VmaNodeSync(const VmaNodeSync&) = delete;
  VmaNodeSync& operator=(const VmaNodeSync&) = delete;

  void start();
  void stop();
  // One round now (the thread runs them; tests may too, before start()).
  void round();

 private:
  void loop();
  void sync_access(const std::vector<VmaRecord>& vmas);
  void tell_nodes(const std::vector<VmaRecord>& vmas);

  PairingService& pairing_;
  VmaRepository& vmas_;
  VmaNodeSyncOptions options_;
  std::string access_;                      // the VMA rows as last written to the files
  std::map<std::string, VmaState> states_;  // each VMA's state as last seen
  struct Told {
    std::string list;  // the node list as last sent
    std::chrono::steady_clock::time_point at;
    std::string error;  // the last failure, logged once
  };
  std::map<std::string, Told> told_;  // by VMA id
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace mk::oma
