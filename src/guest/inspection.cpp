#include "guest/inspection.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "guest/accel.h"
#include "guest/run_tool.h"
#include "vsphere/xml.h"

namespace mk::guest {
namespace {

namespace xml = mk::vsphere::xml;

// Why virt-v2v cannot convert this guest, "" when it can.
std::string refusal(const GuestInspection& g, const InspectOptions& options) {
  if (!g.os_found) return "no operating system found on the VM's disks";
  if (g.os_family == "windows" && options.virtio_win.empty()) {
    return "Windows guest: converting it needs the virtio-win drivers, which Debian does not ship; "
           "set the virtio-win path in the settings";
  }
  if (g.os_family != "linux" && g.os_family != "windows") {
    return "operating system \"" + g.os_family + "\" cannot be converted by virt-v2v";
  }
  if (g.boot_disk < 0) return "the root filesystem " + g.root_device + " is on no disk of this VM";
  return "";
}

}  // namespace

std::string appliance_disk_name(int index) {
  // sda..sdz, then sdaa.. as the kernel names them.
  std::string name;
  int n = index;
  do {
    name.insert(name.begin(), static_cast<char>('a' + n % 26));
    n = n / 26 - 1;
  } while (n >= 0);
  return "/dev/sd" + name;
}

int appliance_disk_index(const std::string& device) {
  std::string d = device;
  for (const char* prefix : {"/dev/sd", "/dev/vd", "/dev/hd"}) {
    if (d.rfind(prefix, 0) == 0) {
      d = d.substr(7);
      int index = 0;
      std::size_t i = 0;
      for (; i < d.size() && d[i] >= 'a' && d[i] <= 'z'; ++i) index = index * 26 + (d[i] - 'a' + 1);
      return i == 0 ? -1 : index - 1;
    }
  }
  return -1;  // LVM (/dev/vg/lv) or mapper devices: the boot disk is then decided by the caller
}

GuestInspection parse_inspector_xml(const std::string& text, std::size_t disk_count) {
  GuestInspection g;
  const xml::Document doc = xml::Document::parse(text, "virt-inspector output");
  const xml::Node os = doc.root().child("operatingsystem");
  if (!os) return g;
  g.os_found = true;
  g.os_family = os.text_of("name");
  g.distro = os.text_of("distro");
  g.product_name = os.text_of("product_name");
  g.osinfo = os.text_of("osinfo");
  g.version = os.text_of("major_version") + "." + os.text_of("minor_version", "0");
  g.root_device = os.text_of("root");
  g.boot_disk = appliance_disk_index(g.root_device);
  if (g.boot_disk >= static_cast<int>(disk_count)) g.boot_disk = -1;
  g.firmware = "bios";
  for (const xml::Node& mp : os.child("mountpoints").children("mountpoint")) {
    if (mp.text() == "/boot/efi") g.firmware = "uefi";
  }
  return g;
}

GuestInspection inspect_guest(const std::vector<DiskImage>& disks, const InspectOptions& options) {
  if (disks.empty()) throw UsageError("inspecting a guest needs at least one disk");
  std::vector<std::string> argv{"virt-inspector", "--no-applications", "--no-icon"};
  for (const DiskImage& d : disks) {
    argv.push_back("--format=" + d.format);
    argv.push_back("-a");
    argv.push_back(d.path);
  }
  ToolOptions tool;
  tool.env = libguestfs_env(detect_accel());
  tool.timeout = options.timeout;
  tool.cancel = options.cancel;
  const ToolResult r = run_tool(argv, tool);
  if (r.timed_out || r.cancelled) {
    throw Error("inspecting " + disks.front().path + " did not finish: " + r.output_tail());
  }
  GuestInspection g;
  const std::size_t xml_start = r.output.find("<?xml");
  if (r.status == 0 && xml_start != std::string::npos) {
    // Standard error shares the log: keep only the document.
    const std::string end_tag = "</operatingsystems>";
    const std::size_t end = r.output.find(end_tag, xml_start);
    const std::size_t len = end == std::string::npos ? std::string::npos : end + end_tag.size() - xml_start;
    g = parse_inspector_xml(r.output.substr(xml_start, len), disks.size());
  } else if (r.output.find("no operating system") == std::string::npos) {
    throw Error("virt-inspector failed on " + disks.front().path + ": " + r.output_tail());
  }
  g.reason = refusal(g, options);
  g.convertible = g.reason.empty();
  g.seconds = r.seconds;
  return g;
}

std::string summary(const GuestInspection& g) {
  return fmt::format("{} {} ({}), root {} on disk {}, {} ({:.0f} s)", g.distro, g.version, g.os_family, g.root_device,
                     g.boot_disk, g.firmware, g.seconds);
}

nlohmann::json to_json(const GuestInspection& g) {
  return {{"os_found", g.os_found},       {"os_family", g.os_family}, {"distro", g.distro},
          {"version", g.version},         {"product_name", g.product_name},
          {"osinfo", g.osinfo},           {"root_device", g.root_device},
          {"boot_disk", g.boot_disk},     {"firmware", g.firmware},
          {"convertible", g.convertible}, {"reason", g.reason},
          {"seconds", g.seconds}};
}

}  // namespace mk::guest
