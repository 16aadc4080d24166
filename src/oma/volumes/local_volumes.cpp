#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "common/log.h"
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
  std::string path = file_path(volume_id);
  // The marker first: a crash at any later point leaves a file known to be unrecorded.
  std::string marker = marker_path(volume_id);
  int mfd = ::open(marker.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (mfd < 0 || ::fsync(mfd) != 0) {
    int e = errno;
    if (mfd >= 0) ::close(mfd);
    throw Error(fmt::format("volume {}: cannot create {}: {} (check free space and permissions of {})", volume_id,
                            marker, std::strerror(e), dir_));
  }
  ::close(mfd);
  // O_EXCL: a volume file is never reused by accident; reuse goes through the database.
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int e = errno;
    ::unlink(marker.c_str());
    throw Error(fmt::format("volume {}: cannot create {}: {} (check free space and permissions of {})", volume_id,
                            path, std::strerror(e), dir_));
  }
  if (::ftruncate(fd, static_cast<off_t>(size_bytes)) != 0) {
    int e = errno;
    ::close(fd);
    ::unlink(path.c_str());
    ::unlink(marker.c_str());
    throw Error(fmt::format("volume {}: cannot size {} to {} bytes: {}", volume_id, path, size_bytes, std::strerror(e)));
  }
  ::close(fd);
  return {volume_id, path, size_bytes};
}

std::string LocalVolumeBackend::file_path(const std::string& volume_id) const {
  return fmt::format("{}/vol-{}.img", dir_, volume_id);
}

std::string LocalVolumeBackend::marker_path(const std::string& volume_id) const {
  return fmt::format("{}/vol-{}.creating", dir_, volume_id);
}

void LocalVolumeBackend::recorded(const CreatedVolume& v) {
  if (::unlink(marker_path(v.volume_id).c_str()) != 0 && errno != ENOENT) {
    // Harmless but said: the next start sees the volume recorded and drops the marker.
    log::warn("volume {}: cannot remove its creation marker {}: {}", v.volume_id, marker_path(v.volume_id),
              std::strerror(errno));
  }
}

std::vector<CreatedVolume> LocalVolumeBackend::unrecorded() const {
  std::vector<CreatedVolume> found;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, ec)) {
    std::string name = entry.path().filename().string();
    const std::string prefix = "vol-", suffix = ".creating";
    if (name.size() <= prefix.size() + suffix.size() || !name.starts_with(prefix) || !name.ends_with(suffix)) continue;
    std::string id = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
    std::error_code size_ec;
    auto size = std::filesystem::file_size(file_path(id), size_ec);
    found.push_back({id, file_path(id), size_ec ? 0 : static_cast<uint64_t>(size)});
  }
  if (ec) throw Error(fmt::format("cannot list the volumes directory {}: {}", dir_, ec.message()));
  return found;
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
  if (device_path != file_path(volume_id)) {
    throw Error(fmt::format("volume {}: refusing to remove {}, which is not its file in {}", volume_id, device_path,
                            dir_));
  }
  if (::unlink(device_path.c_str()) != 0 && errno != ENOENT) {
    throw Error(fmt::format("volume {}: cannot remove {}: {}", volume_id, device_path, std::strerror(errno)));
  }
  ::unlink(marker_path(volume_id).c_str());  // after the file: never a file without its marker
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
