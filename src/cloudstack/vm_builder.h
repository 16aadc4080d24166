// What a migrated VM is made of, and VmBuilder, which assembles a CloudStack VM from the
// volumes that hold a source VM's disks (cutover and test failover both use it).
//
// Assembly: deployVirtualMachine with startvm=false (service offering, template, zone;
// CPUs, memory and, when the offering names none, a CPU speed from the VMware spec when
// the offering is customised; the name an RFC 1123 label derived from the VMware name,
// which stays the display name), then one NIC per further source NIC with
// addNicToVirtualMachine (iptonetworklist is a map keyed by network in CloudStack: two
// entries collapse into one NIC), keeping the MAC where the mapping says the network
// allows it; the template's root volume detached and deleted, the root disk (the disk
// inspection found the root filesystem on, else the OS disk) attached as device 0, the
// other disks attached in unit order, then the VM started. With an inspected guest the
// deploy is fitted to it (guest_fit.h): the template of its OS family or distro,
// boottype/bootmode, and its OS type set with updateVirtualMachine while still stopped. CloudStack gives
// a VM at most one NIC per network, so two source NICs mapped to one network are refused
// by check(). Tear-down detaches our volumes before destroying the VM, so that destroying
// it can never take a migrated disk with it; it expunges when the account may (an admin,
// or allow.user.expunge.recover.vm), else destroys without expunge and says so.
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
#include "cloudstack/guest_fit.h"
#include "cloudstack/volumes.h"

namespace mk::cloudstack {

// ---- what the OMA knows about the source VM --------------------------------------

struct SourceNic {
  std::string network;  // the VMware network (port group) name
  std::string mac;      // "00:50:56:..."
};

struct SourceDisk {
  DiskRef disk;
  int unit = 0;          // controller unit order; the root disk is attached first anyway
  bool os_disk = false;  // exactly one per VM: the root disk unless inspection found another
  std::string volume_id; // the CloudStack volume that holds it
};

struct SourceVm {
  std::string vm_uuid;
  std::string name;
  int cpus = 1;
  int memory_mib = 1024;
  std::vector<SourceNic> nics;
  std::vector<SourceDisk> disks;
  std::string firmware;      // vSphere's config.firmware: "bios", "efi"; "" = not known
  bool secure_boot = false;  // vSphere's bootOptions.efiSecureBootEnabled
  GuestFacts guest;          // what inspecting the replicas found (guest_fit.h); empty if not inspected
};

// ---- where it goes --------------------------------------------------------------

struct NetworkMapping {
  std::string network_id;  // CloudStack network
  bool keep_mac = true;    // the network accepts a chosen MAC address
};

struct TargetSettings {
  std::string zone_id;
  std::string service_offering_id;
  std::string template_id;  // the template when os_templates names none for the guest
  std::map<std::string, std::string> os_templates;  // OS family or distro -> template (guest_fit.h)
  std::map<std::string, NetworkMapping> networks;  // VMware network name -> CloudStack
  int cpu_speed_mhz = 1000;  // sent when a custom offering names no CPU speed (its shares)
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

// The guest's conversion for KVM (the OMA's: virt-v2v-in-place through overlays, src/guest).
// `devices` are the VM's volumes as block devices on the OMA's VM, in unit order. Returns
// the step's detail. Throws when the conversion failed; the volumes are then exactly as
// they were (the implementation's promise: it writes them only after a conversion
// succeeded), except when it throws ConversionChangedVolumes.
class GuestConversion {
 public:
  virtual ~GuestConversion() = default;
  virtual std::string convert(const SourceVm& vm, const std::vector<std::string>& devices) = 0;
};

// A failed conversion that could not put every volume back as it was.
class ConversionChangedVolumes : public Error {
 public:
  using Error::Error;
};

// The VM's disks in unit order (as guest tools number them).
std::vector<SourceDisk> unit_order(const SourceVm& vm);

// ---- assembly -------------------------------------------------------------------

struct DeployRequest {
  std::string name;           // CloudStack's VM name (an RFC 1123 label, names.h)
  std::string display_name;   // the VMware name, as it is
  std::vector<std::pair<std::string, std::string>> nics;  // network id, MAC ("" = any); one per network
  int cpus = 1;
  int memory_mib = 1024;
  std::string template_id;    // "" = the settings' template
  BootChoice boot;            // boottype/bootmode ("" = CloudStack's default)
  OsTypeChoice os_type;       // set with updateVirtualMachine after the deploy ("" id = the template's)
  // What the request was fitted to, for the job's step ("" when the guest was not inspected).
  std::string fit() const;
};

class VmBuilder {
 public:
  VmBuilder(const Client& client, const CloudStackVolumes& volumes, TargetSettings target);

  // Throws UsageError (nothing changed) unless every NIC is mapped, no two NICs map to
  // one network, exactly one disk is the OS disk, and every disk has a volume this OMA
  // owns.
  void check(const SourceVm& vm) const;

  // One NIC per source NIC through the mapping, named `name`, displayed as the VMware
  // name. `network_override` (a test network) gives the VM one NIC there, without a MAC.
  // Fitted to the guest (guest_fit.h): template, boot type and mode, and the OS type
  // from listOsTypes when the guest was inspected.
  DeployRequest request_for(const SourceVm& vm, const std::string& name,
                            const std::string& network_override = "") const;

  // The VM's CloudStack name: host_name_for(vm.name), or, when another VM has it,
  // disambiguated with the VM's UUID.
  std::string free_host_name(const SourceVm& vm) const;

  void detach_volume(const SourceDisk& disk) const;  // owned volume, from wherever it is
  // Deploys with startvm=false (boottype/bootmode as requested), sets the OS type
  // (updateVirtualMachine, while stopped), adds the further NICs, and returns the new VM's id.
  // `vm_id` is set as soon as CloudStack names the VM, before its job ends, so that a
  // failed or timed-out job still leaves the caller able to tear the VM down.
  std::string deploy(const DeployRequest& request, std::string& vm_id) const;
  // The VM a deploy of `request` made, found by its name and display name (not destroyed),
  // or "": for a deploy whose answer never arrived (CloudStack may have made the VM all
  // the same). Only for a name this job chose as free just before the deploy.
  std::string find_deployed(const DeployRequest& request) const;
  void replace_root(const std::string& vm_id, const SourceVm& vm) const;
  void attach_data_disks(const std::string& vm_id, const SourceVm& vm) const;
  void start(const std::string& vm_id) const;

  // Stops the VM if running, detaches every volume of `vm` from it, destroys it (with
  // expunge when the account may). A VM that no longer exists is fine. A volume that
  // cannot be detached does not stop the others; the VM is then left (not destroyed) and
  // the error says why. Returns a note for the job when the VM could only be destroyed,
  // not expunged; "" otherwise.
  std::string tear_down(const std::string& vm_id, const SourceVm& vm) const;

  // Attaches each disk's volume back to the OMA (if it is not there), waits for its
  // device and re-creates its export (the caller passes only disks whose export it
  // removed). Goes on past failures; returns the first error text, "" if none.
  std::string return_to_oma(const std::vector<SourceDisk>& disks, Exports& exports) const;

  const TargetSettings& target() const { return target_; }
  const CloudStackVolumes& volumes() const { return volumes_; }

 private:
  void add_nics(const std::string& vm_id, const DeployRequest& request) const;
  void set_os_type(const std::string& vm_id, const DeployRequest& request) const;
  const Client& client_;
  const CloudStackVolumes& volumes_;
  TargetSettings target_;
};

// The disk that becomes the root volume (device 0): the disk inspection found the root
// filesystem on, else the one marked os_disk.
const SourceDisk& root_disk(const SourceVm& vm);

// The disks in the order they are attached: the root disk, then the others by unit.
std::vector<SourceDisk> attach_order(const SourceVm& vm);

// The service offering `id` as listServiceOfferings returns it; throws mk::Error naming
// the setting when it does not exist.
Json service_offering(const Client& client, const std::string& id);

// Whether this account may destroy a VM with expunge=true: an admin, or a user where
// allow.user.expunge.recover.vm is set (listCapabilities).
bool can_expunge(const Client& client);

}  // namespace mk::cloudstack
