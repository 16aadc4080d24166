// qcow2 overlays over a VM's volumes: the only thing guest tools ever write to.
//
// An Overlay is a qcow2 file whose backing file is one volume (raw, or qcow2: the format is
// given). qemu opens a backing file read-only, so anything done to the overlay (inspection,
// conversion, booting) leaves the volume byte-identical. commit() writes the overlay's
// changes into the volume (qemu-img commit); the overlay file is removed by the destructor
// in every case. Not thread-safe; one owner.
#pragma once

#include <string>
#include <vector>

namespace mk::guest {

// One of a VM's disks as guest tools see it: a file (a replica or a volume) and its format.
struct DiskImage {
  std::string path;
  std::string format = "raw";  // "raw" or "qcow2"
};

class Overlay {
 public:
  // Creates `overlay_path` over `base` (qemu-img create). Throws mk::Error naming both.
  Overlay(const DiskImage& base, std::string overlay_path);
  ~Overlay();
  Overlay(Overlay&& other) noexcept;
  Overlay& operator=(Overlay&&) = delete;
  Overlay(const Overlay&) = delete;
  Overlay& operator=(const Overlay&) = delete;

  const std::string& path() const { return path_; }
  const DiskImage& base() const { return base_; }
  DiskImage image() const { return {path_, "qcow2"}; }

  // Writes the overlay's clusters into the base (qemu-img commit). Throws mk::Error naming
  // the volume; the base is then partly written and must be restored by the caller's
  // rollback (a cutover reverts to the final pass).
  void commit();

 private:
  DiskImage base_;
  std::string path_;
};

// One overlay per disk of `bases`, in order, as `dir`/disk<N>.qcow2; and the images a tool
// is given for them.
std::vector<Overlay> make_overlays(const std::vector<DiskImage>& bases, const std::string& dir);
std::vector<DiskImage> images_of(const std::vector<Overlay>& overlays);

}  // namespace mk::guest
