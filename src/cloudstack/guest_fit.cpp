#include "cloudstack/guest_fit.h"

#include <fmt/format.h>

#include <cctype>
#include <optional>
#include <set>
#include <sstream>

#include "common/text.h"

namespace mk::cloudstack {
namespace {

// How CloudStack's guest_os descriptions begin for each virt-inspector distro.
std::vector<std::string> name_prefixes(const GuestFacts& g) {
  static const std::map<std::string, std::vector<std::string>> kPrefixes = {
      {"debian", {"Debian GNU/Linux"}},
      {"ubuntu", {"Ubuntu"}},
      {"rhel", {"Red Hat Enterprise Linux"}},
      {"redhat-based", {"Red Hat Enterprise Linux"}},
      {"centos", {"CentOS"}},
      {"rocky", {"Rocky Linux"}},
      {"almalinux", {"AlmaLinux"}},
      {"oraclelinux", {"Oracle Linux", "Oracle Enterprise Linux"}},
      {"fedora", {"Fedora"}},
      {"sles", {"SUSE Linux Enterprise Server", "SUSE Linux Enterprise"}},
      {"opensuse", {"openSUSE"}},
      {"freebsd", {"FreeBSD"}},
  };
  if (g.distro == "windows" || g.os_family == "windows") {
    // "Windows Server 2019 Standard" -> "Windows Server 2019"; "Windows 10 Pro" -> "Windows 10".
    std::string name, word;
    std::istringstream words(g.product_name);
    while (words >> word) {
      name += (name.empty() ? "" : " ") + word;
      if (std::isdigit(static_cast<unsigned char>(word[0]))) return {name};
    }
    return {};
  }
  auto it = kPrefixes.find(g.distro);
  return it == kPrefixes.end() ? std::vector<std::string>{} : it->second;
}

bool starts_with_nocase(const std::string& text, const std::string& prefix) {
  return mk::to_lower(text.substr(0, prefix.size())) == mk::to_lower(prefix);
}

struct Version {
  int major = 0;
  std::optional<int> minor;
};

// The first "N" or "N.M" in `text`, if any.
std::optional<Version> first_version(const std::string& text) {
  std::size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == text.size()) return std::nullopt;
  Version v;
  std::size_t end = i;
  while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
  v.major = std::stoi(text.substr(i, end - i));
  if (end + 1 < text.size() && text[end] == '.' && std::isdigit(static_cast<unsigned char>(text[end + 1]))) {
    std::size_t m = end + 1, mend = m;
    while (mend < text.size() && std::isdigit(static_cast<unsigned char>(text[mend]))) ++mend;
    v.minor = std::stoi(text.substr(m, mend - m));
  }
  return v;
}

// 4: same major and minor; 3: same major, the OS type names no minor; 2: same major,
// another minor; 0: another version. Windows names carry their version in the prefix.
int version_score(const std::string& rest, const GuestFacts& g, bool windows) {
  if (windows) {
    // The prefix ended with the version ("2019"): the next character must not extend it.
    return rest.empty() || !std::isalnum(static_cast<unsigned char>(rest[0])) ? 4 : 0;
  }
  auto v = first_version(rest.substr(0, rest.find('(')));
  if (!v || v->major != g.major_version) return 0;
  if (!v->minor) return 3;
  return *v->minor == g.minor_version ? 4 : 2;
}

}  // namespace

BootChoice choose_boot(const std::string& vsphere_firmware, bool vsphere_secure_boot, const GuestFacts& guest) {
  BootChoice c;
  bool uefi = false;
  if (vsphere_firmware == "efi" || vsphere_firmware == "bios") {
    uefi = vsphere_firmware == "efi";
    c.why = fmt::format("vSphere firmware {}", vsphere_firmware);
    if (!guest.firmware.empty() && (guest.firmware == "uefi") != uefi) {
      c.why += fmt::format(" (the disks look {}: vSphere's setting wins, the source booted with it)",
                           guest.firmware == "uefi" ? "UEFI (an EFI system partition)" : "BIOS (no EFI system partition)");
    }
  } else if (!guest.firmware.empty()) {
    uefi = guest.firmware == "uefi";
    c.why = uefi ? "the disks have an EFI system partition" : "the disks have no EFI system partition";
  } else {
    c.why = "firmware not known: CloudStack's default";
    return c;
  }
  c.boot_type = uefi ? "UEFI" : "BIOS";
  c.boot_mode = uefi && vsphere_secure_boot ? "SECURE" : "LEGACY";
  if (uefi && vsphere_secure_boot) c.why += ", secure boot on in vSphere";
  return c;
}

OsTypeChoice choose_os_type(const std::vector<Json>& os_types, const GuestFacts& guest) {
  OsTypeChoice best;
  if (!guest.known()) {
    best.how = "the guest was not inspected";
    return best;
  }
  const bool windows = guest.distro == "windows" || guest.os_family == "windows";
  double best_score = 0;
  for (const std::string& prefix : name_prefixes(guest)) {
    for (const Json& t : os_types) {
      const std::string d = json_text(t, "description");
      if (!starts_with_nocase(d, prefix)) continue;
      const std::string rest = d.substr(prefix.size());
      // The prefix must end at a word boundary ("CentOS" is not "CentOS Stream"'s prefix
      // only by letters).
      if (!rest.empty() && std::isalpha(static_cast<unsigned char>(rest[0]))) continue;
      double score = version_score(rest, guest, windows);
      if (score == 0) continue;
      if (d.find("32-bit") != std::string::npos) score -= 1.5;  // every inspected guest here is 64-bit
      if (score > best_score) {
        best_score = score;
        best = {json_text(t, "id"), d, score >= 3 ? "exact" : "same major version"};
      }
    }
  }
  if (!best.id.empty()) return best;
  if (guest.os_family == "linux") {
    for (const Json& t : os_types) {
      if (json_text(t, "description") == "Other PV (64-bit)") {
        return {json_text(t, "id"), "Other PV (64-bit)",
                fmt::format("generic: CloudStack names no {} {}.{}", guest.distro, guest.major_version,
                            guest.minor_version)};
      }
    }
  }
  best.how = fmt::format("CloudStack has no OS type for {} {}.{}: the template's OS type stays", guest.distro,
                         guest.major_version, guest.minor_version);
  return best;
}

std::string choose_template(const std::map<std::string, std::string>& os_templates, const GuestFacts& guest,
                            const std::string& fallback) {
  if (guest.known()) {
    for (const std::string& key : {guest.distro, guest.os_family}) {
      auto it = os_templates.find(key);
      if (!key.empty() && it != os_templates.end() && !it->second.empty()) return it->second;
    }
  }
  return fallback;
}

bool is_os_template_key(const std::string& key) {
  // libguestfs' inspection: guestfs_inspect_get_type and guestfs_inspect_get_distro.
  static const std::set<std::string> kKeys = {
      "linux", "windows", "freebsd", "netbsd", "openbsd", "hurd", "dos", "minix",
      "alpinelinux", "altlinux", "archlinux", "buildroot", "centos", "cirros", "coreos", "debian", "fedora",
      "freedos", "frugalware", "gentoo", "kalilinux", "kylin", "linuxmint", "mageia", "mandriva", "meego",
      "msdos", "neokylin", "openmandriva", "opensuse", "oraclelinux", "pardus", "pldlinux", "redhat-based",
      "rhel", "rocky", "almalinux", "scientificlinux", "slackware", "sles", "suse-based", "ttylinux", "ubuntu",
      "voidlinux"};
  return kKeys.count(key) > 0;
}

}  // namespace mk::cloudstack
