// qcow2 overlays over a VM's volumes: the only thing guest tools ever write to.
//
// An Overlay is a qcow2 file whose backing file is one volume (raw, or qcow2: the format is
// given). qemu opens a backing file read-only, so anything done to the overlay (inspection,
// conversion, booting) leaves the volume byte-identical. commit() writes the overlay's
// changes into the volume (qemu-img commit); on a raw volume it first saves what the
// commit will overwrite (the overlay's own clusters, from qemu-img map) next to the
// overlay, and a commit that fails half-way is undone from that copy, so the volume is
// as before either way. The overlay file is removed by the destructor in every case.
// Not thread-safe; one owner.
#pragma once

#include <cstdint>
#include <functional>
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

  struct Range {
    uint64_t offset = 0, length = 0;
  };

  // Saves what a commit will overwrite in a raw base (the overlay's own clusters, from
  // qemu-img map) into <overlay>.undo; nothing for a qcow2 base. Done once; commit()
  // calls it. Call it for every overlay of a VM before committing any, so that a later
  // disk's failure can restore the earlier ones.
  void save_undo();
  // Writes the saved copy back into the base: the base as before the commit. Throws
  // mk::Error when there is no saved copy (qcow2) or writing fails.
  void restore();
  // Writes the overlay's clusters into the base (qemu-img commit). Throws mk::Error naming
  // the volume when it failed: the base is then restored from the saved copy (the message
  // says whether that worked). `after_commit` (tests only) runs after qemu-img commit
  // returned; what it throws counts as a failed commit.
  void commit(const std::function<void()>& after_commit = nullptr);

 private:
  DiskImage base_;
  std::string path_;
  std::vector<Range> undo_ranges_;
  bool saved_ = false;
};

// One overlay per disk of `bases`, in order, as `dir`/disk<N>.qcow2; and the images a tool
// is given for them.
std::vector<Overlay> make_overlays(const std::vector<DiskImage>& bases, const std::string& dir);
std::vector<DiskImage> images_of(const std::vector<Overlay>& overlays);

}  // namespace mk::guest
