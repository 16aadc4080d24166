#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "oma/names.h"
#include "oma/volumes/volume_backend.h"

namespace mk::oma {

LocalVolumeBackend::LocalVolumeBackend(std::string dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) throw Error(fmt::format("cannot create the volumes directory {}: {}", dir_, ec.message()));
}

CreatedVolume LocalVolumeBackend::create(const VolumeSpec& spec) {
  const std::string& volume_id = spec.volume_id;
  const uint64_t size_bytes = spec.size_bytes;
  check_uuid(volume_id, "volume_id");
  std::string path = fmt::format("{}/vol-{}.img", dir_, volume_id);
  // O_EXCL: a volume file is never reused by accident; reuse goes through the database.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    throw Error(fmt::format("volume {}: cannot create {}: {} (check free space and permissions of {})", volume_id,
                            path, std::strerror(errno), dir_));
  }
  if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    throw Error(fmt::format("volume {}: cannot size {} to {} bytes: {}", volume_id, path, size_bytes, std::strerror(e)));
  }
  ::close(fd);
  return {volume_id, path, size_bytes};
}

uint64_t LocalVolumeBackend::size_of(const std::string& device_path) const {
  struct stat st {};
  if (::stat(device_path.c_str(), &st) != 0) {
    throw Error(fmt::format("volume file {} is missing: {} (restore it or delete the volume)", device_path,
                            std::strerror(errno)));
  }
  return static_cast<uint64_t>(st.st_size);
}

void LocalVolumeBackend::remove(const VolumeSpec& owner, const std::string& device_path) {
  const std::string& volume_id = owner.volume_id;
  if (device_path != fmt::format("{}/vol-{}.img", dir_, volume_id)) {
    throw Error(fmt::format("volume {}: refusing to remove {}, which is not its file in {}", volume_id, device_path,
                            dir_));
  }
  if (::unlink(device_path.c_str()) != 0 && errno != ENOENT) {
    throw Error(fmt::format("volume {}: cannot remove {}: {}", volume_id, device_path, std::strerror(errno)));
  }
}

uint64_t LocalVolumeBackend::grow(const VolumeSpec& spec, const std::string& device_path) {
  uint64_t now = size_of(device_path);
  if (now >= spec.size_bytes) return now;
  if (::truncate(device_path.c_str(), static_cast<off_t>(spec.size_bytes)) != 0) {
    throw Error(fmt::format("volume {}: cannot grow {} from {} to {} bytes: {} (check free space)", spec.volume_id,
                            device_path, now, spec.size_bytes, std::strerror(errno)));
  }
  return spec.size_bytes;
}

}  // namespace mk::oma
