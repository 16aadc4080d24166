// What a migrated VM is made of, and VmBuilder, which assembles a CloudStack VM from the
// volumes that hold a source VM's disks (cutover and test failover both use it).
//
// Assembly: deployVirtualMachine with startvm=false (service offering, template, zone;
// CPUs and memory from the VMware spec when the offering is customised; one NIC per
// source NIC through the network-mapping table, keeping the MAC where the mapping says
// the network allows it), the template's root volume detached and deleted, the OS disk
// attached as device 0, the data disks attached in unit order, then the VM started.
// Tear-down detaches our volumes before destroying the VM (expunge), so that destroying
// it can never take a migrated disk with it.
//
// Also here: the collaborators the OMA plugs in (source power through the VMA, the final
// replication pass, NBD exports), as small interfaces.
//
// VmBuilder borrows the Client and CloudStackVolumes (they must outlive it). Not
// thread-safe beyond what they are; one job uses one builder.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cloudstack/client.h"
#include "cloudstack/volumes.h"

namespace mk::cloudstack {

// ---- what the OMA knows about the source VM --------------------------------------

struct SourceNic {
  std::string network;  // the VMware network (port group) name
  std::string mac;      // "00:50:56:..."
};

struct SourceDisk {
  DiskRef disk;
  int unit = 0;          // controller unit order; the OS disk is attached first anyway
  bool os_disk = false;  // exactly one per VM
  std::string volume_id; // the CloudStack volume that holds it
};

struct SourceVm {
  std::string vm_uuid;
  std::string name;
  int cpus = 1;
  int memory_mib = 1024;
  std::vector<SourceNic> nics;
  std::vector<SourceDisk> disks;
};

// ---- where it goes --------------------------------------------------------------

struct NetworkMapping {
  std::string network_id;  // CloudStack network
  bool keep_mac = true;    // the network accepts a chosen MAC address
};

struct TargetSettings {
  std::string zone_id;
  std::string service_offering_id;
  std::string template_id;
  std::map<std::string, NetworkMapping> networks;  // VMware network name -> CloudStack
};

// ---- collaborators the OMA provides ---------------------------------------------

// The source VM's power, through the VMA.
class SourcePower {
 public:
  virtual ~SourcePower() = default;
  virtual bool is_powered_on(const std::string& vm_uuid) = 0;
  virtual void shutdown_guest(const std::string& vm_uuid) = 0;  // asks; returns at once
  virtual void power_off(const std::string& vm_uuid) = 0;
  virtual void power_on(const std::string& vm_uuid) = 0;
};

// The last incremental pass of every disk of a powered-off source, change IDs committed.
class FinalPass {
 public:
  virtual ~FinalPass() = default;
  virtual void run(const std::string& vm_uuid) = 0;
};

// The OMA's NBD exports of the volumes.
class Exports {
 public:
  virtual ~Exports() = default;
  // Removes the disk's export before its volume leaves the OMA.
  virtual void remove(const DiskRef& disk) = 0;
  // Creates the disk's export of that device, or keeps an identical one (so a cleanup
  // run twice is harmless); an export of another volume or device is an error.
  virtual void ensure(const DiskRef& disk, const std::string& volume_id,
                        const std::string& device_path) = 0;
};

// ---- assembly -------------------------------------------------------------------

struct DeployRequest {
  std::string name;           // CloudStack's VM name (host name rules)
  std::string display_name;
  std::vector<std::pair<std::string, std::string>> nics;  // network id, MAC ("" = any)
  int cpus = 1;
  int memory_mib = 1024;
};

class VmBuilder {
 public:
  VmBuilder(const Client& client, const CloudStackVolumes& volumes, TargetSettings target);

  // Throws UsageError (nothing changed) unless every NIC is mapped, exactly one disk is
  // the OS disk, and every disk has a volume this OMA owns.
  void check(const SourceVm& vm) const;

  // One NIC per source NIC through the mapping; `network_override` (a test network)
  // replaces every mapped network and never keeps MACs.
  DeployRequest request_for(const SourceVm& vm, const std::string& name,
                            const std::string& network_override = "") const;

  void detach_volume(const SourceDisk& disk) const;  // owned volume, from wherever it is
  // Deploys with startvm=false and returns the new VM's id. `vm_id` is set as soon as
  // CloudStack names the VM, before its job ends, so that a failed or timed-out job
  // still leaves the caller able to tear the VM down.
  std::string deploy(const DeployRequest& request, std::string& vm_id) const;
  void replace_root(const std::string& vm_id, const SourceVm& vm) const;
  void attach_data_disks(const std::string& vm_id, const SourceVm& vm) const;
  void start(const std::string& vm_id) const;

  // Stops the VM if running, detaches every volume of `vm` from it, destroys it with
  // expunge. A VM that no longer exists is fine.
  void tear_down(const std::string& vm_id, const SourceVm& vm) const;

  // Attaches each disk's volume back to the OMA (if it is not there), waits for its
  // device and re-creates its export (the caller passes only disks whose export it
  // removed). Goes on past failures; returns the first error text, "" if none.
  std::string return_to_oma(const std::vector<SourceDisk>& disks, Exports& exports) const;

  const TargetSettings& target() const { return target_; }
  const CloudStackVolumes& volumes() const { return volumes_; }

 private:
  bool offering_is_customised() const;
  const Client& client_;
  const CloudStackVolumes& volumes_;
  TargetSettings target_;
};

// The disks in the order they are attached: the OS disk, then data disks by unit.
std::vector<SourceDisk> attach_order(const SourceVm& vm);

}  // namespace mk::cloudstack
