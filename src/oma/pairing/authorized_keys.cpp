#include "oma/pairing/authorized_keys.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "protocol/enrolment.h"

namespace mk::oma {

std::string normalize_vma_public_key(const std::string& key) {
  return protocol::normalize_ed25519_public_key(key, "ssh_public_key");
}

std::string authorized_key_line(const VmaRecord& vma, int nbd_port) {
  return fmt::format(
      "restrict,port-forwarding,permitlisten=\"127.0.0.1:{}\",permitopen=\"127.0.0.1:{}\",command=\"/bin/false\" "
      "{} vma-{}",
      vma.tunnel_port, nbd_port, normalize_vma_public_key(vma.ssh_public_key), vma.vma_id);
}

void write_authorized_keys(const std::string& path, const std::vector<VmaRecord>& vmas, int nbd_port,
                           const std::string& owner) {
  std::string content = "# Managed by the MigrateKit OMA: one line per approved VMA. Edits are overwritten.\n";
  for (const auto& v : vmas)
    if (v.state == "approved") content += authorized_key_line(v, nbd_port) + "\n";
  std::string tmp = path + ".tmp";
  ::unlink(tmp.c_str());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(fmt::format("cannot write the VMA authorized keys file {}: {}", tmp, std::strerror(errno)));
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && ::fsync(fd) == 0;
  if (ok && ::geteuid() == 0 && !owner.empty() && owner != "root") {
    if (struct passwd* pw = ::getpwnam(owner.c_str())) ok = ::fchown(fd, pw->pw_uid, pw->pw_gid) == 0;
  }
  int err = errno;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    if (ok) err = errno;
    ::unlink(tmp.c_str());
    throw Error(fmt::format("cannot write the VMA authorized keys file {}: {}", path, std::strerror(err)));
  }
}

}  // namespace mk::oma
