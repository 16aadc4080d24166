// VCenter: the VMA's one vCenter (or ESXi): a shared, lazily connected Session and the
// operations the API needs on it — discovery of VMs with disks and NICs, power for
// cutover, removal of our snapshots — plus a VmwareSource per replication job.
//
// The session is opened on first use and kept (it logs in again by itself when the
// server forgets it); when vCenter cannot be reached, each call tries again. VMs are
// named by their instance UUID. Snapshots "of ours" are those whose names start with
// the configured prefix and whose description names this VMA as their owner
// (VmwareSource makes its pass snapshots so); another VMA's are never touched.
//
// Thread-safe: the Session is, and session() is guarded.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "protocol/messages.h"
#include "source/vmware_source.h"
#include "vsphere/inventory.h"
#include "vsphere/session.h"

namespace mk::vma {

struct VcenterConfig {
  vsphere::ConnectOptions connect;  // url, user, password file, TLS policy
  std::string snapshot_prefix = "migratekit-";
  std::string snapshot_owner;       // this VMA's identity on its snapshots ("" = the host's name)
  source::VddkParams vddk;          // libdir, transports, read_rate
  // Labs and sites with datastores mounted on the VMA: datastore name -> directory;
  // disks are then served from their flat files instead of through VDDK.
  std::map<std::string, std::string> flat_datastores;
};

// No VM with this instance UUID (deleted, or not visible to the vCenter user).
class VmNotFound : public Error {
 public:
  using Error::Error;
};

class VCenter {
 public:
  explicit VCenter(VcenterConfig config);

  // The logged-in session, connecting first if needed. Throws mk::Error naming vCenter.
  std::shared_ptr<vsphere::Session> session();
  // "" when vCenter answers a cheap call within `wait`; otherwise why not. One probe
  // runs at a time; callers that arrive meanwhile share its answer.
  std::string check(std::chrono::seconds wait = std::chrono::seconds(5));
  const std::string& host() const { return host_; }

  // Every VM but templates, with disks (units: the boot disk 0, then controller/unit
  // order), NICs and preflight findings.
  protocol::Discovery discover();
  vsphere::VmInfo find_vm(const std::string& vm_id);
  // One VM as discover() shows it, without listing the inventory. Throws VmNotFound.
  protocol::DiscoveredVm describe(const std::string& vm_id);
  // Everything that would refuse a pass of the VM, at once; nothing is changed on it.
  std::vector<protocol::PreflightFinding> preflight(const std::string& vm_id);
  // Shutdown (guest shutdown, power off after `timeout`), off or on. Answers once the
  // VM is in the asked state; a VM already there is left alone.
  protocol::PowerReply power(const std::string& vm_id, protocol::PowerAction action, std::chrono::seconds timeout);
  // Removes every snapshot of ours on one VM; returns how many.
  int remove_our_snapshots(const std::string& vm_id);
  // The same on every VM (found in one query), calling `lock_vm(vm_id)` around each VM's
  // removal (so that a job starting on it waits), except the snapshots in `keep` (those
  // of passes that resume); returns how many. A VM that fails is reported in `errors`
  // and the others go on.
  int remove_all_our_snapshots(const std::function<std::unique_lock<std::mutex>(const std::string&)>& lock_vm,
                               std::vector<std::string>& errors, const std::set<std::string>& keep = {});

  // A source for one job; `work_dir` is an existing private directory for its readers.
  std::unique_ptr<source::VmwareSource> make_source(const std::string& work_dir);

 private:
  std::string flat_file_for(const vsphere::DiskInfo& disk) const;
  source::VmwareSourceOptions source_options(const std::string& work_dir);
  std::vector<protocol::PreflightFinding> findings_of(const vsphere::VmInfo& vm) const;
  protocol::DiscoveredVm discovered(const vsphere::VmInfo& vm, const std::string& datacenter) const;

  VcenterConfig config_;
  std::string host_;
  std::mutex mu_;  // guards session_ (held while connecting)
  std::shared_ptr<vsphere::Session> session_;
  std::mutex probe_mu_;  // guards probe_
  std::shared_future<std::string> probe_;
};

// "[ds] dir/name.vmdk" with `ds` mounted at DIR -> DIR/dir/name-flat.vmdk. Throws
// mk::Error for a datastore without a mapping or a path that leaves the datastore.
std::string flat_file_path(const std::map<std::string, std::string>& datastores, const std::string& file_name);

}  // namespace mk::vma
