#include "guest/overlay.h"

#include <unistd.h>

#include <filesystem>
#include <utility>

#include "common/error.h"
#include "guest/run_tool.h"

namespace mk::guest {

Overlay::Overlay(const DiskImage& base, std::string overlay_path)
    : base_(base), path_(std::move(overlay_path)) {
  if (base_.format != "raw" && base_.format != "qcow2") {
    throw UsageError("disk " + base_.path + ": format \"" + base_.format + "\" is not raw or qcow2");
  }
  // qemu resolves a relative backing path against the overlay's directory: give it an
  // absolute one.
  const std::string backing = std::filesystem::absolute(base_.path).string();
  const ToolResult r = run_tool({"qemu-img", "create", "-q", "-f", "qcow2", "-F", base_.format, "-b",
                                 backing, path_});
  if (r.status != 0) {
    throw Error("cannot create a qcow2 overlay " + path_ + " over " + base_.path + ": " + r.output_tail());
  }
}

Overlay::Overlay(Overlay&& other) noexcept
    : base_(std::move(other.base_)), path_(std::exchange(other.path_, std::string())) {}

Overlay::~Overlay() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

void Overlay::commit() {
  const ToolResult r = run_tool({"qemu-img", "commit", "-q", "-f", "qcow2", path_});
  if (r.status != 0) {
    throw Error("committing the converted guest into volume " + base_.path + " failed: " + r.output_tail());
  }
}

std::vector<Overlay> make_overlays(const std::vector<DiskImage>& bases, const std::string& dir) {
  std::vector<Overlay> overlays;
  overlays.reserve(bases.size());
  for (std::size_t i = 0; i < bases.size(); ++i) {
    overlays.emplace_back(bases[i], dir + "/disk" + std::to_string(i) + ".qcow2");
  }
  return overlays;
}

std::vector<DiskImage> images_of(const std::vector<Overlay>& overlays) {
  std::vector<DiskImage> images;
  for (const Overlay& o : overlays) images.push_back(o.image());
  return images;
}

}  // namespace mk::guest
