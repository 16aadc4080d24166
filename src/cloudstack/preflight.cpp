#include "cloudstack/preflight.h"

#include <fmt/format.h>

#include "cloudstack/volumes.h"
#include "common/text.h"

namespace mk::cloudstack {
namespace {

Json vm_of(const Client& client, const std::string& vm_id) {
  Json reply = client.call("listVirtualMachines", {{"id", vm_id}, {"listall", "true"}});
  Json vm = json_first(reply, "virtualmachine");
  if (vm.is_null()) {
    throw Error(fmt::format("the OMA's VM {} is not visible to this API key; check the CloudStack settings", vm_id));
  }
  return vm;
}

}  // namespace

std::vector<TargetFinding> check_offering(const Client& client, const TargetSettings& target, const SourceVm& vm) {
  std::vector<TargetFinding> out;
  Json offering = service_offering(client, target.service_offering_id);
  std::string name = json_text(offering, "name");
  if (!json_bool(offering, "iscustomized", false)) {
    out.push_back({"offering-fixed", "",
                   fmt::format("service offering {} has a fixed size ({} vCPU, {} MiB); the source has {} vCPU and "
                               "{} MiB",
                               name, json_text(offering, "cpunumber"), json_text(offering, "memory"), vm.cpus,
                               vm.memory_mib),
                   "choose a custom offering to keep the source's size", false});
    return out;
  }
  const Json& limits = json_object(offering, "serviceofferingdetails");
  int64_t lo = json_integer(limits, "mincpunumber", 1), hi = json_integer(limits, "maxcpunumber", INT32_MAX);
  if (vm.cpus < lo || vm.cpus > hi) {
    out.push_back({"offering-cpus", "",
                   fmt::format("the source has {} vCPU; service offering {} accepts {} to {}, so CloudStack "
                               "would refuse to build the VM at cutover",
                               vm.cpus, name, lo, hi),
                   "choose a service offering whose CPU range includes it, or change the source's CPUs", true,
                   true});
  }
  lo = json_integer(limits, "minmemory", 1);
  hi = json_integer(limits, "maxmemory", INT32_MAX);
  if (vm.memory_mib < lo || vm.memory_mib > hi) {
    out.push_back({"offering-memory", "",
                   fmt::format("the source has {} MiB of memory; service offering {} accepts {} to {} MiB, so "
                               "CloudStack would refuse to build the VM at cutover",
                               vm.memory_mib, name, lo, hi),
                   "choose a service offering whose memory range includes it, or change the source's memory", true,
                   true});
  }
  return out;
}

std::string TargetFinding::text() const {
  std::string where = disk_key.empty() ? "" : fmt::format("disk {}: ", disk_key);
  return fmt::format("{}{}; {}", where, problem, remedy);
}

int default_max_data_volumes(const std::string& hypervisor) { return mk::to_lower(hypervisor) == "kvm" ? 32 : 6; }

CloudLimits read_limits(const Client& client, const std::string& oma_vm_id) {
  CloudLimits l;
  l.hypervisor = json_text(vm_of(client, oma_vm_id), "hypervisor");
  l.max_data_volumes = default_max_data_volumes(l.hypervisor);
  try {
    for (const auto& c : client.list("listHypervisorCapabilities", "hypervisorCapabilities",
                                     {{"hypervisor", l.hypervisor}})) {
      if (mk::to_lower(json_text(c, "hypervisor")) != mk::to_lower(l.hypervisor)) continue;
      int64_t n = json_integer(c, "maxdatavolumeslimit", -1);
      if (n > 0) {
        l.max_data_volumes = static_cast<int>(n);
        l.max_data_volumes_known = true;
      }
    }
  } catch (const ApiError& e) {
    // Admin-only: a user's key gets 432 (or 401 on older servers). The default stands.
    if (e.errorcode() != 432 && e.errorcode() != 401 && e.errorcode() != 531) throw;
  }
  Json caps = json_object(client.call("listCapabilities"), "capability");
  l.max_volume_gib = static_cast<uint64_t>(json_integer(caps, "customdiskofferingmaxsize", 1024));
  l.kvm_snapshot_enabled = json_bool(caps, "kvmsnapshotenabled", false);
  l.can_expunge = can_expunge(client);
  return l;
}

std::vector<std::string> attached_data_volume_ids(const Client& client, const std::string& vm_id) {
  std::vector<std::string> out;
  for (const auto& v : client.list("listVolumes", "volume", {{"virtualmachineid", vm_id}, {"listall", "true"}})) {
    if (json_text(v, "type") == "DATADISK") out.push_back(json_text(v, "id"));
  }
  return out;
}

int attached_data_volumes(const Client& client, const std::string& vm_id) {
  return static_cast<int>(attached_data_volume_ids(client, vm_id).size());
}

std::vector<TargetFinding> check_oma_vm(const Client& client, const std::string& oma_vm_id) {
  std::vector<TargetFinding> out;
  auto snapshots = client.list("listVMSnapshot", "vmSnapshot", {{"virtualmachineid", oma_vm_id}, {"listall", "true"}});
  if (!snapshots.empty()) {
    out.push_back({"oma-vm-snapshots", "",
                   fmt::format("the OMA's VM {} has {} VM snapshot(s) (\"{}\"...): CloudStack refuses to attach or "
                               "detach volumes of a VM with VM snapshots",
                               oma_vm_id, snapshots.size(), json_text(snapshots[0], "name")),
                   "delete the OMA VM's VM snapshots (deleteVMSnapshot), then run the preflight again"});
  }
  Json vm = vm_of(client, oma_vm_id);
  if (!json_text(vm, "backupofferingid").empty()) {
    out.push_back({"oma-backup-offering", "",
                   fmt::format("the OMA's VM {} is assigned backup offering {}: CloudStack refuses to attach or "
                               "detach volumes of a VM with backups",
                               oma_vm_id, json_text(vm, "backupofferingname")),
                   "remove the OMA's VM from its backup offering (removeVirtualMachineFromBackupOffering); back "
                   "up the OMA's database instead"});
  }
  return out;
}

std::vector<TargetFinding> check_target(const Client& client, const CloudLimits& limits, const TargetSettings& target,
                                        const SourceVm& vm, const std::string& oma_vm_id) {
  std::vector<TargetFinding> out;
  for (const auto& d : vm.disks) {
    uint64_t gib = CloudStackVolumes::size_gib(d.disk.capacity_bytes);
    if (gib > limits.max_volume_gib) {
      out.push_back({"disk-too-large", d.disk.disk_key,
                     fmt::format("it needs a {} GiB volume; this cloud allows at most {} GiB "
                                 "(custom.diskoffering.size.max)",
                                 gib, limits.max_volume_gib),
                     fmt::format("raise custom.diskoffering.size.max to at least {} (a global setting), or shrink "
                                 "the disk at the source",
                                 gib)});
    }
  }
  if (static_cast<int>(vm.disks.size()) > limits.max_data_volumes) {
    out.push_back({"too-many-disks", "",
                   fmt::format("it has {} disks, and each needs a data volume on the OMA's VM at once; {} allows {} "
                               "data volumes per VM{}",
                               vm.disks.size(), limits.hypervisor, limits.max_data_volumes,
                               limits.max_data_volumes_known ? "" : " (the default; this key cannot read the limit)"),
                   "raise maxdatavolumeslimit for the hypervisor (updateHypervisorCapabilities), or migrate the VM "
                   "with fewer disks"});
  }
  for (auto& f : check_offering(client, target, vm)) out.push_back(std::move(f));
  for (auto& f : check_oma_vm(client, oma_vm_id)) out.push_back(std::move(f));
  if (!limits.kvm_snapshot_enabled) {
    out.push_back({"kvm-snapshots-off", "",
                   "kvm.snapshot.enabled is off: volumes attached to a running VM cannot be snapshotted",
                   "nothing to do: test failover snapshots the volumes once they are detached from the OMA", false});
  }
  if (!limits.can_expunge) {
    out.push_back({"no-expunge", "",
                   "this account may not expunge VMs (not an admin, allow.user.expunge.recover.vm is off)",
                   "test VMs and rolled-back VMs are destroyed without expunge and wait for expunge.delay; set "
                   "allow.user.expunge.recover.vm to expunge them at once",
                   false});
  }
  return out;
}

}  // namespace mk::cloudstack
