// The libvirt domain XML that virt-v2v-in-place reads (-i libvirtxml) to convert all of a
// VM's disks together, so multi-disk guests (/var or /home on a second disk) convert.
// Pure function; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "guest/overlay.h"

namespace mk::guest {

// `disks` in unit order (sda, sdb, ... on a SCSI bus as a VMware guest has them);
// `firmware` "bios" or "uefi". The name is escaped; paths must be absolute.
std::string conversion_domain_xml(const std::string& name, const std::vector<DiskImage>& disks,
                                  const std::string& firmware);

}  // namespace mk::guest
