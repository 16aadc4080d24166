#include "source/vmware_source.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <ctime>
#include <filesystem>

#include "common/error.h"
#include "common/log.h"
#include "source/change_ids.h"
#include "vsphere/vm_ops.h"

namespace mk::source {
namespace {

using vsphere::SoapFault;

class VmwarePass : public Pass {
 public:
  VmwarePass(std::shared_ptr<vsphere::Session> s, vsphere::VmInfo vm, vsphere::Moref snapshot)
      : s_(std::move(s)), vm_(std::move(vm)), snapshot_(std::move(snapshot)) {}
  ~VmwarePass() override {
    try {
      close(false);
    } catch (const std::exception& e) {
      log::error("VM {}: cleaning up the pass failed: {}", vm_.name, e.what());
    }
  }

  const std::vector<DiskPass>& disks() const override { return disks_; }

  void close(bool succeeded) override {
    if (closed_) return;
    closed_ = true;
    readers_.clear();  // stops every nbdkit
    vsphere::remove_snapshot(*s_, vm_, snapshot_);
    log::info("VM {}: pass {}; snapshot {} removed", vm_.name, succeeded ? "succeeded" : "ended without success",
              snapshot_.value);
  }

  std::vector<DiskPass> disks_;
  std::vector<std::unique_ptr<DiskReader>> readers_;

 private:
  std::shared_ptr<vsphere::Session> s_;
  vsphere::VmInfo vm_;
  vsphere::Moref snapshot_;
  bool closed_ = false;
};

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y%m%dT%H%M%SZ}", tm);
}

}  // namespace

VmwareSource::VmwareSource(std::shared_ptr<vsphere::Session> session, vsphere::ConnectOptions connect,
                           VmwareSourceOptions options)
    : session_(std::move(session)), connect_(std::move(connect)), options_(std::move(options)) {
  if (options_.snapshot_prefix.size() < 4) {
    throw UsageError("the snapshot prefix must have at least 4 characters: it is how leftovers are recognised");
  }
  if (options_.work_dir.empty()) throw UsageError("VmwareSource: no work directory for reader sockets");
}

std::vector<VmSummary> VmwareSource::list_vms() {
  std::vector<VmSummary> out;
  for (auto& vm : vsphere::list_vms(*session_)) {
    if (!vm.is_template) out.push_back({vm.instance_uuid, vm.name, vm.power_state});
  }
  return out;
}

vsphere::VmInfo VmwareSource::find(const std::string& vm_id) {
  auto ref = vsphere::find_vm_by_instance_uuid(*session_, vm_id);
  if (!ref) {
    throw Error(fmt::format("vSphere {}: no VM with instance UUID {} (deleted, or not visible to user {})",
                            session_->host(), vm_id, connect_.user));
  }
  return vsphere::describe_vm(*session_, *ref);
}

std::vector<DiskDescription> VmwareSource::describe_disks(const std::string& vm_id) {
  std::vector<DiskDescription> out;
  for (auto& d : find(vm_id).disks) out.push_back({DiskKey(d.key), d.file_name, d.capacity_bytes, d.change_id});
  return out;
}

int VmwareSource::remove_leftover_snapshots(const vsphere::VmInfo& vm) {
  int n = 0;
  for (auto& snap : vsphere::list_snapshots(*session_, vm.ref)) {
    if (!snap.name.starts_with(options_.snapshot_prefix)) continue;
    log::warn("VM {}: removing leftover snapshot \"{}\" ({}) of an earlier run", vm.name, snap.name, snap.ref.value);
    vsphere::remove_snapshot(*session_, vm, snap.ref);
    ++n;
  }
  return n;
}

std::unique_ptr<Pass> VmwareSource::open_pass(const std::string& vm_id, const ChangeIds& stored) {
  vsphere::VmInfo vm = find(vm_id);
  remove_leftover_snapshots(vm);
  if (!vm.cbt_enabled) {
    if (!options_.enable_cbt) {
      throw UsageError(fmt::format("VM {}: Changed Block Tracking is off and enabling it was not allowed; enable "
                                   "it (ctkEnabled) or allow migratekit to",
                                   vm.name));
    }
    log::info("VM {}: enabling Changed Block Tracking", vm.name);
    vsphere::set_change_tracking(*session_, vm, true);
    // CBT becomes active at the next stun/unstun of the VM: a snapshot created and removed.
    // A crash in between leaves a snapshot with our prefix, removed by the next pass.
    auto activation = vsphere::create_snapshot(*session_, vm, options_.snapshot_prefix + "cbt-activation",
                                               "MigrateKit OSSEA: activates Changed Block Tracking");
    vsphere::remove_snapshot(*session_, vm, activation);
  }
  auto snap = vsphere::create_snapshot(*session_, vm, options_.snapshot_prefix + utc_now(),
                                       "MigrateKit OSSEA replication pass; removed when the pass ends");
  auto pass = std::make_unique<VmwarePass>(session_, vm, snap);  // from here on, close() cleans up
  for (auto& disk : vsphere::snapshot_disks(*session_, snap)) {
    DiskPass d;
    d.key = DiskKey(disk.key);
    d.label = disk.file_name;
    d.capacity = disk.capacity_bytes;
    auto it = stored.find(d.key);
    ChangeIdDecision dec = decide_change_id(it == stored.end() ? std::nullopt : std::optional(it->second),
                                            disk.change_id, fmt::format("{} of VM {}", disk.file_name, vm.name));
    RangeList areas;
    try {
      areas = vsphere::query_changed_disk_areas(*session_, vm.ref, snap, disk.key, disk.capacity_bytes, dec.query);
    } catch (const SoapFault& f) {
      if (dec.full || f.type() != "FileFault") throw;
      dec = {"*", true,
             fmt::format("disk {} of VM {}: full pass: vSphere rejected the stored change ID \"{}\" ({})",
                         disk.file_name, vm.name, dec.query, f.fault_message())};
      areas = vsphere::query_changed_disk_areas(*session_, vm.ref, snap, disk.key, disk.capacity_bytes, "*");
    }
    if (dec.full && it != stored.end()) {
      log::warn("{}", dec.reason);
    } else {
      log::info("{}", dec.reason);
    }
    d.full = dec.full;
    d.reason = dec.reason;
    // A full pass forced on a target that already holds an earlier pass (CBT reset,
    // rejected change ID) covers the whole disk, so that areas no longer allocated on
    // the source are zeroed on the target; a first pass copies the allocated areas.
    if (!(dec.full && it != stored.end())) d.request.changed_areas = std::move(areas);
    d.change_id_to_store = disk.change_id;
    if (options_.flat_file_for) {
      pass->readers_.push_back(DiskReader::start_file(options_.flat_file_for(disk), options_.work_dir,
                                                      std::chrono::seconds(30), options_.vddk.read_rate));
    } else {
      VddkParams p = options_.vddk;
      p.server = session_->host();
      p.user = connect_.user;
      p.password_file = std::filesystem::absolute(connect_.password_file).string();
      p.thumbprint = session_->thumbprint();
      p.vm_moref = vm.ref.value;
      p.snapshot_moref = snap.value;
      p.file = disk.file_name;
      pass->readers_.push_back(DiskReader::start_vddk(p, options_.work_dir));
    }
    d.uri = pass->readers_.back()->uri();
    pass->disks_.push_back(std::move(d));
  }
  return pass;
}

}  // namespace mk::source
