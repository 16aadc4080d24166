#include "source/qcow2_source.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <filesystem>
#include <regex>

#include "common/error.h"
#include "common/log.h"
#include "common/subprocess.h"
#include "source/disk_reader.h"

namespace mk::source {
namespace {

nlohmann::json image_info(const std::string& image) {
  std::string out;
  int rc = mk::run_capture({"qemu-img", "info", "--force-share", "--output=json", "-f", "qcow2", image}, out);
  if (rc != 0) {
    throw Error(fmt::format("qemu-img info {} failed (status {}); is it a qcow2 image we can read?", image, rc));
  }
  try {
    return nlohmann::json::parse(out);
  } catch (const std::exception& e) {
    throw Error(fmt::format("qemu-img info {}: unreadable answer: {}", image, e.what()));
  }
}

void bitmap_op(const std::string& image, const std::string& op, const std::string& name) {
  std::string out;
  std::string err_path = (std::filesystem::temp_directory_path() / "mk-qemu-img-XXXXXX").string();
  int tmp = ::mkstemp(err_path.data());
  if (tmp < 0) throw Error(fmt::format("qemu-img bitmap {}: cannot create a temporary file", op));
  ::close(tmp);
  int rc = mk::run_capture({"qemu-img", "bitmap", op, "-f", "qcow2", image, name}, out, err_path);
  std::error_code ec;
  if (rc != 0) {
    std::string why;
    if (FILE* f = std::fopen(err_path.c_str(), "r")) {
      char buf[512];
      size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      why.assign(buf, n);
      std::fclose(f);
    }
    std::filesystem::remove(err_path, ec);
    throw Error(fmt::format("qemu-img bitmap {} {} on {} failed: {}(is the image in use by a running guest?)", op, name,
                            image, why));
  }
  std::filesystem::remove(err_path, ec);
}

std::string new_bitmap_name(const std::string& prefix) {
  static std::atomic<unsigned> counter{0};
  return fmt::format("{}{}-{}-{}", prefix, std::time(nullptr), ::getpid(), counter++);
}

struct ImagePass {
  std::string image;
  std::string stored;  // bitmap exported for this pass ("" on a full pass)
  std::string next;    // bitmap added for the next pass
  std::unique_ptr<DiskReader> reader;
};

class Qcow2Pass : public Pass {
 public:
  ~Qcow2Pass() override {
    try {
      close(false);
    } catch (const std::exception& e) {
      log::error("qcow2 pass cleanup failed: {}", e.what());
    }
  }
  const std::vector<DiskPass>& disks() const override { return disks_; }

  void close(bool succeeded) override {
    if (closed_) return;
    closed_ = true;
    std::string first_error;
    for (auto& p : images_) {
      p.reader.reset();  // stops qemu-nbd before the image is modified
      try {
        // Commit: the new bitmap becomes the change ID. Abort: drop it; the stored one
        // still covers everything since the last success.
        const std::string& drop = succeeded ? p.stored : p.next;
        if (!drop.empty()) bitmap_op(p.image, "--remove", drop);
      } catch (const std::exception& e) {
        if (first_error.empty()) first_error = e.what();
      }
    }
    if (!first_error.empty()) throw Error(first_error);
  }

  std::vector<DiskPass> disks_;
  std::vector<ImagePass> images_;

 private:
  bool closed_ = false;
};

}  // namespace

uint64_t qcow2_virtual_size(const std::string& image) {
  auto j = image_info(image);
  if (!j.contains("virtual-size") || !j["virtual-size"].is_number_unsigned()) {
    throw Error(fmt::format("qemu-img info {}: no virtual size", image));
  }
  return j["virtual-size"].get<uint64_t>();
}

std::vector<Qcow2BitmapInfo> qcow2_bitmaps(const std::string& image) {
  auto j = image_info(image);
  std::vector<Qcow2BitmapInfo> out;
  auto data = j.value("format-specific", nlohmann::json::object()).value("data", nlohmann::json::object());
  for (auto& b : data.value("bitmaps", nlohmann::json::array())) {
    Qcow2BitmapInfo info;
    info.name = b.value("name", "");
    info.granularity = b.value("granularity", uint64_t{0});
    for (auto& f : b.value("flags", nlohmann::json::array())) info.flags.push_back(f.get<std::string>());
    out.push_back(std::move(info));
  }
  return out;
}

Qcow2Source::Qcow2Source(std::map<std::string, Qcow2Vm> vms, std::string work_dir, std::string bitmap_prefix)
    : vms_(std::move(vms)), work_dir_(std::move(work_dir)), prefix_(std::move(bitmap_prefix)) {
  static const std::regex name("^[A-Za-z0-9_.-]{2,32}$");
  if (!std::regex_match(prefix_, name)) throw UsageError(fmt::format("bitmap prefix \"{}\" is not a safe name", prefix_));
  for (auto& [id, vm] : vms_) {
    for (auto& img : vm.images) {
      if (img.empty() || img[0] != '/') {
        throw UsageError(fmt::format("VM {}: image \"{}\" must be an absolute path", id, img));
      }
    }
  }
}

const Qcow2Vm& Qcow2Source::vm(const std::string& id) const {
  auto it = vms_.find(id);
  if (it == vms_.end()) throw UsageError(fmt::format("no qcow2 VM with id \"{}\"", id));
  return it->second;
}

std::vector<VmSummary> Qcow2Source::list_vms() {
  std::vector<VmSummary> out;
  for (auto& [id, vm] : vms_) out.push_back({id, vm.name, "poweredOff"});
  return out;
}

std::vector<DiskDescription> Qcow2Source::describe_disks(const std::string& vm_id) {
  std::vector<DiskDescription> out;
  const Qcow2Vm& v = vm(vm_id);
  for (size_t i = 0; i < v.images.size(); ++i) {
    std::string newest;
    for (auto& b : qcow2_bitmaps(v.images[i])) {
      if (b.name.starts_with(prefix_)) newest = b.name;
    }
    out.push_back({DiskKey(static_cast<int64_t>(i)), v.images[i], qcow2_virtual_size(v.images[i]), newest});
  }
  return out;
}

std::unique_ptr<Pass> Qcow2Source::open_pass(const std::string& vm_id, const ChangeIds& stored) {
  const Qcow2Vm& v = vm(vm_id);
  auto pass = std::make_unique<Qcow2Pass>();
  pass->images_.reserve(v.images.size());
  for (size_t i = 0; i < v.images.size(); ++i) {
    const std::string& image = v.images[i];
    auto it = stored.find(DiskKey(static_cast<int64_t>(i)));
    std::string want = it == stored.end() ? "" : it->second;
    auto asked = std::chrono::steady_clock::now();
    DiskPass d;
    d.key = DiskKey(static_cast<int64_t>(i));
    d.label = image;
    d.capacity = qcow2_virtual_size(image);
    ImagePass p;
    p.image = image;
    bool have = false;
    for (auto& b : qcow2_bitmaps(image)) {
      bool in_use = std::find(b.flags.begin(), b.flags.end(), "in-use") != b.flags.end();
      if (b.name == want && !in_use) {
        have = true;
      } else if (b.name.starts_with(prefix_)) {
        log::warn("image {}: removing {} bitmap \"{}\" of an earlier run", image, in_use ? "inconsistent" : "leftover",
                  b.name);
        bitmap_op(image, "--remove", b.name);
      }
    }
    if (want.empty()) {
      d.full = true;
      d.reason = fmt::format("disk {}: first pass: copying the whole image", image);
    } else if (!have) {
      d.full = true;
      d.reason = fmt::format("disk {}: full pass: the stored bitmap \"{}\" is missing or inconsistent", image, want);
      log::warn("{}", d.reason);
    } else {
      p.stored = want;
      d.request.dirty_bitmap = want;
      d.reason = fmt::format("disk {}: incremental pass from bitmap \"{}\"", image, want);
    }
    p.next = new_bitmap_name(prefix_);
    bitmap_op(image, "--add", p.next);
    pass->images_.push_back(std::move(p));  // from here on, close() removes the new bitmap
    ImagePass& ip = pass->images_.back();
    auto answered = std::chrono::steady_clock::now();
    d.change_query_seconds = std::chrono::duration<double>(answered - asked).count();
    ip.reader = DiskReader::start_qemu_nbd(image, ip.stored, work_dir_);
    d.uri = ip.reader->uri();
    d.reader_start_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - answered).count();
    d.change_id_to_store = ip.next;
    pass->disks_.push_back(std::move(d));
  }
  return pass;
}

}  // namespace mk::source
