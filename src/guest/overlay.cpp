#include "guest/overlay.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/subprocess.h"
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
    : base_(std::move(other.base_)),
      path_(std::exchange(other.path_, std::string())),
      undo_ranges_(std::move(other.undo_ranges_)),
      saved_(other.saved_) {}

Overlay::~Overlay() {
  if (path_.empty()) return;
  ::unlink(path_.c_str());
  ::unlink((path_ + ".undo").c_str());
}

namespace {

using Range = Overlay::Range;

// The ranges the overlay itself holds (depth 0: data or zeros written to it), which a
// commit writes into the base.
std::vector<Range> own_ranges(const std::string& overlay) {
  std::string out;
  if (mk::run_capture({"qemu-img", "map", "--output=json", "-f", "qcow2", overlay}, out) != 0) {
    throw Error("qemu-img map of " + overlay + " failed: cannot tell what a commit would overwrite");
  }
  std::vector<Range> ranges;
  for (const auto& e : nlohmann::json::parse(out)) {
    if (e.value("depth", 1) == 0) ranges.push_back({e.at("start").get<uint64_t>(), e.at("length").get<uint64_t>()});
  }
  return ranges;
}

// Copies `ranges` from `from` (at their offsets, or packed one after another) to `to`.
void copy_ranges(const std::string& from, bool from_packed, const std::string& to, bool to_packed,
                 const std::vector<Range>& ranges) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  const int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  auto done = [&] {
    if (in >= 0) ::close(in);
    if (out >= 0) ::close(out);
  };
  if (in < 0 || out < 0) {
    done();
    throw Error("cannot open " + (in < 0 ? from : to) + ": " + std::strerror(errno));
  }
  std::vector<char> buf(1 << 20);
  uint64_t packed = 0;
  for (const Range& r : ranges) {
    for (uint64_t at = 0; at < r.length;) {
      const std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(buf.size(), r.length - at));
      const off_t src = static_cast<off_t>(from_packed ? packed : r.offset + at);
      const off_t dst = static_cast<off_t>(to_packed ? packed : r.offset + at);
      if (::pread(in, buf.data(), n, src) != static_cast<ssize_t>(n) ||
          ::pwrite(out, buf.data(), n, dst) != static_cast<ssize_t>(n)) {
        const std::string why = std::strerror(errno);
        done();
        throw Error("copying " + std::to_string(n) + " bytes from " + from + " to " + to + " failed: " + why);
      }
      at += n;
      packed += n;
    }
  }
  const bool synced = ::fsync(out) == 0;
  done();
  if (!synced) throw Error("flushing " + to + " failed: " + std::strerror(errno));
}

}  // namespace

void Overlay::save_undo() {
  if (base_.format != "raw" || saved_) return;
  undo_ranges_ = own_ranges(path_);
  copy_ranges(base_.path, false, path_ + ".undo", true, undo_ranges_);
  saved_ = true;
}

void Overlay::restore() {
  if (!saved_) {
    throw Error("volume " + base_.path + " (" + base_.format +
                ") has no saved copy to restore: it may be partly written; replicate it in full before another cutover");
  }
  copy_ranges(path_ + ".undo", true, base_.path, false, undo_ranges_);
}

void Overlay::commit(const std::function<void()>& after_commit) {
  save_undo();  // what the commit will overwrite (raw bases: offsets are the volume's)
  std::string error;
  const ToolResult r = run_tool({"qemu-img", "commit", "-q", "-f", "qcow2", path_});
  if (r.status != 0) error = r.output_tail();
  if (error.empty() && after_commit) {
    try {
      after_commit();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  if (error.empty()) return;
  std::string outcome;
  try {
    restore();
    outcome = "the volume was restored to what it was before the commit";
  } catch (const std::exception& e) {
    outcome = std::string("RESTORING IT FAILED: ") + e.what();
  }
  throw Error("committing the converted guest into volume " + base_.path + " failed: " + error + "; " + outcome);
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
