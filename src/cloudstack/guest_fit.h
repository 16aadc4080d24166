// Fitting a CloudStack VM to the guest it will run: what inspecting the replicas found
// (GuestFacts, filled by the OMA from src/guest's inspection), and the pure decisions
// made from it and from vSphere's settings of the source VM:
//
//   root disk   the disk that holds the root filesystem (inspection), else the disk the
//               OMA marked as the OS disk (the first in unit order);
//   boot        boottype BIOS or UEFI and bootmode LEGACY or SECURE for
//               deployVirtualMachine. vSphere's `firmware` wins when known (the source
//               booted with it), what the disks show (an EFI system partition) decides
//               when it is not; SECURE only when vSphere had secure boot on;
//   OS type     the listOsTypes entry that best names the inspected OS (same distro and
//               version, then the same major version); a Linux guest without one gets
//               "Other PV (64-bit)": CloudStack's KVM agent gives a guest virtio disks
//               only for OS types it knows to be paravirtual (Debian, Ubuntu, RHEL, CentOS,
//               Fedora, Oracle, "Other PV"), and "Other Linux" would get IDE: a guest just
//               converted for virtio must not be handed IDE disks;
//   template    per OS family or distro from the settings (distro first, then family),
//               else the global template.
//
// Free functions over plain values; thread-safe.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "cloudstack/client.h"

namespace mk::cloudstack {

// What inspection found on the VM's disks. Empty (os_family "") when not inspected.
struct GuestFacts {
  std::string os_family;     // "linux", "windows", ... ; "" = not inspected
  std::string distro;        // "debian", "ubuntu", "rhel", "windows", ...
  int major_version = 0;
  int minor_version = 0;
  std::string product_name;  // "Windows Server 2019 Standard", "Debian GNU/Linux 12 (bookworm)"
  int boot_disk = -1;        // index into the VM's disks in unit order; -1 = not known
  std::string firmware;      // "bios" or "uefi" as the disks show; "" = not known
  bool known() const { return !os_family.empty(); }
};

struct BootChoice {
  std::string boot_type;  // "BIOS" or "UEFI"; "" = leave CloudStack's default (nothing known)
  std::string boot_mode;  // "LEGACY" or "SECURE" ("" with boot_type "")
  std::string why;        // for the job's step: where it came from, and any disagreement
};

// vsphere_firmware: vSphere's config.firmware ("bios", "efi", "" unknown).
BootChoice choose_boot(const std::string& vsphere_firmware, bool vsphere_secure_boot, const GuestFacts& guest);

struct OsTypeChoice {
  std::string id;           // "" = none fits: the template's OS type stays
  std::string description;  // CloudStack's name for it
  std::string how;          // "exact", "same major version", "generic", or why none
};

// `os_types`: listOsTypes' "ostype" items (id, description).
OsTypeChoice choose_os_type(const std::vector<Json>& os_types, const GuestFacts& guest);

// The template for this guest: os_templates[distro], else os_templates[os_family], else
// `fallback`.
std::string choose_template(const std::map<std::string, std::string>& os_templates, const GuestFacts& guest,
                            const std::string& fallback);

// The keys os_templates may have: the OS families and distros virt-inspector reports.
bool is_os_template_key(const std::string& key);

}  // namespace mk::cloudstack
