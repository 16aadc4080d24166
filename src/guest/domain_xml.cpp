#include "guest/domain_xml.h"

#include "common/error.h"
#include "guest/inspection.h"
#include "vsphere/xml.h"

namespace mk::guest {

std::string conversion_domain_xml(const std::string& name, const std::vector<DiskImage>& disks,
                                  const std::string& firmware) {
  using mk::vsphere::xml::escape;
  std::string x = "<domain type='kvm'>\n  <name>" + escape(name) + "</name>\n";
  x += "  <memory unit='MiB'>1024</memory>\n  <vcpu>1</vcpu>\n";
  x += firmware == "uefi" ? "  <os firmware='efi'>" : "  <os>";
  x += "<type arch='x86_64' machine='pc'>hvm</type></os>\n  <devices>\n";
  for (std::size_t i = 0; i < disks.size(); ++i) {
    if (disks[i].path.empty() || disks[i].path[0] != '/') {
      throw UsageError("disk path \"" + disks[i].path + "\" is not absolute");
    }
    x += "    <disk type='file' device='disk'><driver name='qemu' type='" + escape(disks[i].format) +
         "'/><source file='" + escape(disks[i].path) + "'/><target dev='" +
         appliance_disk_name(static_cast<int>(i)).substr(5) + "' bus='scsi'/></disk>\n";
  }
  x += "  </devices>\n</domain>\n";
  return x;
}

}  // namespace mk::guest
