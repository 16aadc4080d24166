#include "oma/pairing/authorized_keys.h"

#include <fmt/format.h>
#include <pwd.h>
#include <unistd.h>

#include <sstream>

#include "common/error.h"
#include "common/files.h"
#include "protocol/enrolment.h"

namespace mk::oma {

std::string normalize_vma_public_key(const std::string& key) {
  return protocol::normalize_ed25519_public_key(key, "ssh_public_key");
}

std::string authorized_key_line(const VmaRecord& vma, int nbd_port, const std::string& tunnel_address) {
  return fmt::format(
      "restrict,port-forwarding,permitlisten=\"{}:{}\",permitopen=\"127.0.0.1:{}\",command=\"/bin/false\" "
      "{} vma-{}",
      tunnel_address, vma.tunnel_port, nbd_port, normalize_vma_public_key(vma.ssh_public_key), vma.vma_id);
}

void write_authorized_keys(const std::string& path, const std::vector<VmaRecord>& vmas, int nbd_port,
                           const std::string& owner, const std::string& tunnel_address) {
  std::string content = "# Managed by the MigrateKit OMA: one line per approved VMA. Edits are overwritten.\n";
  for (const auto& v : vmas)
    if (v.state == VmaState::Approved) content += authorized_key_line(v, nbd_port, tunnel_address) + "\n";
  PrivateFileOptions options;
  if (::geteuid() == 0 && !owner.empty() && owner != "root") {
    if (struct passwd* pw = ::getpwnam(owner.c_str())) {
      options.uid = pw->pw_uid;
      options.gid = pw->pw_gid;
    }
  }
  try {
    write_private_file(path, content, options);
  } catch (const Error& e) {
    throw Error(fmt::format("the VMA authorized keys file: {}", e.what()));
  }
}

}  // namespace mk::oma
