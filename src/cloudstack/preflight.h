// CloudStack preflight: the limits and settings of a real cloud that would fail a
// migration half-way, read once and checked before anything is created.
//
//   * data volumes per VM: every disk of a VM in replication is a data volume attached to
//     the OMA's VM, and CloudStack caps them per VM (listHypervisorCapabilities'
//     maxdatavolumeslimit; an account that may not ask gets the default: 32 on KVM, 6
//     elsewhere). A VM with more disks than the cap can never be replicated; one whose
//     disks do not fit beside those attached now waits for free slots.
//   * volume size: custom.diskoffering.size.max (listCapabilities'
//     customdiskofferingmaxsize, 1024 GB by default) bounds every volume.
//   * the OMA's VM: with VM snapshots or a backup offering, CloudStack refuses to attach
//     or detach its volumes.
//   * the service offering: a custom one bounds CPUs and memory (its mincpunumber,
//     maxcpunumber, minmemory and maxmemory details); a fixed one gives what it gives.
//   * kvm.snapshot.enabled and whether the account may expunge: not blockers (test
//     failover snapshots detached volumes, and destroys without expunge when it must),
//     reported so that an operator knows.
//
// Functions over a Client; no state. Findings name the disk (when about one), what is
// wrong and what to do.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cloudstack/vm_builder.h"

namespace mk::cloudstack {

struct CloudLimits {
  std::string hypervisor;          // of the OMA's VM: "KVM", ...
  int max_data_volumes = 6;        // per VM
  bool max_data_volumes_known = false;  // false: the default for the hypervisor, not asked
  uint64_t max_volume_gib = 1024;  // custom.diskoffering.size.max
  bool kvm_snapshot_enabled = false;
  bool can_expunge = false;        // admin, or allow.user.expunge.recover.vm
};

// Reads the limits (listCapabilities, listHypervisorCapabilities, listAccounts).
CloudLimits read_limits(const Client& client, const std::string& oma_vm_id);

// The default cap of data volumes per VM for a hypervisor: 32 for KVM, 6 otherwise.
int default_max_data_volumes(const std::string& hypervisor);

// Data volumes attached to `vm_id` now: how many, and their ids.
int attached_data_volumes(const Client& client, const std::string& vm_id);
std::vector<std::string> attached_data_volume_ids(const Client& client, const std::string& vm_id);

struct TargetFinding {
  std::string code;      // "disk-too-large", "too-many-disks", "offering-cpus", "offering-memory",
                         // "oma-vm-snapshots", "oma-backup-offering", "kvm-snapshots-off", "no-expunge"
  std::string disk_key;  // "" for a finding about the whole VM or the cloud
  std::string problem;
  std::string remedy;
  bool blocking = true;  // false: a note, the migration goes on
  bool cutover_only = false;  // about the VM a cutover builds (its offering), not about replication
  std::string text() const;
};

// Everything about `vm` that CloudStack would refuse, all at once.
std::vector<TargetFinding> check_target(const Client& client, const CloudLimits& limits,
                                        const TargetSettings& target, const SourceVm& vm,
                                        const std::string& oma_vm_id);

// The service offering against the source's CPUs and memory: a custom offering's
// ranges (blocking, cutover_only), a fixed offering's size (a note).
std::vector<TargetFinding> check_offering(const Client& client, const TargetSettings& target, const SourceVm& vm);

// Problems of the OMA's own VM (VM snapshots, a backup offering); each blocks every
// attach and detach.
std::vector<TargetFinding> check_oma_vm(const Client& client, const std::string& oma_vm_id);

}  // namespace mk::cloudstack
