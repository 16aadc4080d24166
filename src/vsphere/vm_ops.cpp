#include "vsphere/vm_ops.h"

#include <fmt/format.h>

#include <functional>
#include <thread>

#include "common/log.h"

namespace mk::vsphere {
namespace {

std::string vm_label(const VmInfo& vm) { return fmt::format("VM {} ({})", vm.name, vm.ref.value); }

}  // namespace

Moref create_snapshot(Session& s, const VmInfo& vm, const std::string& name, const std::string& description,
                      bool quiesce, const TaskWait& wait) {
  std::string body = vm.ref.xml("_this") +
                     fmt::format("<name>{}</name><description>{}</description><memory>false</memory>"
                                 "<quiesce>{}</quiesce>",
                                 xml::escape(name), xml::escape(description), quiesce ? "true" : "false");
  TaskResult r = run_task(s, "CreateSnapshot_Task", body, fmt::format("CreateSnapshot \"{}\" on {}", name, vm_label(vm)),
                          wait);
  if (r.result_ref.empty()) {
    throw Error(fmt::format("vSphere {}: CreateSnapshot on {} succeeded but returned no snapshot", s.host(),
                            vm_label(vm)));
  }
  if (r.result_ref.type.empty()) r.result_ref.type = "VirtualMachineSnapshot";
  return r.result_ref;
}

void remove_snapshot(Session& s, const VmInfo& vm, const Moref& snapshot, const TaskWait& wait) {
  run_task(s, "RemoveSnapshot_Task",
           snapshot.xml("_this") + "<removeChildren>false</removeChildren><consolidate>true</consolidate>",
           fmt::format("RemoveSnapshot {} on {}", snapshot.value, vm_label(vm)), wait);
}

std::vector<SnapshotRef> list_snapshots(Session& s, const Moref& vm) {
  std::vector<xml::Document> keep;
  ObjectProperties p = retrieve(s, vm, {"snapshot"}, keep);
  if (xml::Node info = p.get("snapshot")) return parse_snapshot_tree(info);
  return {};
}

std::vector<DiskInfo> snapshot_disks(Session& s, const Moref& snapshot) {
  std::vector<xml::Document> keep;
  ObjectProperties p = retrieve(s, snapshot, {"config.hardware.device"}, keep);
  VmInfo tmp;
  tmp.ref = snapshot;
  tmp.name = "snapshot";
  if (xml::Node d = p.get("config.hardware.device")) parse_devices(d, tmp);
  return tmp.disks;
}

void set_change_tracking(Session& s, const VmInfo& vm, bool enabled, const TaskWait& wait) {
  run_task(s, "ReconfigVM_Task",
           vm.ref.xml("_this") +
               fmt::format("<spec><changeTrackingEnabled>{}</changeTrackingEnabled></spec>", enabled ? "true" : "false"),
           fmt::format("{} Changed Block Tracking on {}", enabled ? "enabling" : "disabling", vm_label(vm)), wait);
}

RangeList query_changed_disk_areas(Session& s, const Moref& vm, const Moref& snapshot, int device_key,
                                           uint64_t capacity, const std::string& change_id) {
  RangeList out;
  uint64_t offset = 0;
  std::string ctx = fmt::format("QueryChangedDiskAreas on VM {} disk {} (change ID \"{}\")", vm.value, device_key,
                                change_id);
  while (offset < capacity) {
    xml::Document doc;
    xml::Node rv = s.call("QueryChangedDiskAreas",
                          vm.xml("_this") + (snapshot.empty() ? "" : snapshot.xml("snapshot")) +
                              fmt::format("<deviceKey>{}</deviceKey><startOffset>{}</startOffset><changeId>{}</changeId>",
                                          device_key, offset, xml::escape(change_id)),
                          doc);
    if (!rv) throw Error(fmt::format("vSphere {}: {}: no DiskChangeInfo in the answer", s.host(), ctx));
    int64_t start = xml::to_int(rv.required_text("startOffset", ctx), ctx + " startOffset");
    int64_t length = xml::to_int(rv.required_text("length", ctx), ctx + " length");
    if (start < 0 || length <= 0 || static_cast<uint64_t>(start) > offset ||
        static_cast<uint64_t>(start) + static_cast<uint64_t>(length) <= offset) {
      throw Error(fmt::format("vSphere {}: {}: the answer covers [{}, +{}), which does not continue from offset {}",
                              s.host(), ctx, start, length, offset));
    }
    uint64_t end = std::min<uint64_t>(capacity, static_cast<uint64_t>(start) + static_cast<uint64_t>(length));
    for (auto& a : rv.children("changedArea")) {
      int64_t as = xml::to_int(a.required_text("start", ctx), ctx + " changedArea.start");
      int64_t al = xml::to_int(a.required_text("length", ctx), ctx + " changedArea.length");
      if (as < 0 || al < 0 || static_cast<uint64_t>(as) + static_cast<uint64_t>(al) > capacity ||
          static_cast<uint64_t>(as) < static_cast<uint64_t>(start)) {
        throw Error(fmt::format("vSphere {}: {}: changed area [{}, +{}) lies outside the disk (capacity {}) or "
                                "before the answer's start {}",
                                s.host(), ctx, as, al, capacity, start));
      }
      out.push_back({static_cast<uint64_t>(as), static_cast<uint64_t>(al)});
    }
    offset = end;
  }
  return normalize(std::move(out));
}

void power_on(Session& s, const VmInfo& vm, const TaskWait& wait) {
  run_task(s, "PowerOnVM_Task", vm.ref.xml("_this"), fmt::format("PowerOn {}", vm_label(vm)), wait);
}

void power_off(Session& s, const VmInfo& vm, const TaskWait& wait) {
  run_task(s, "PowerOffVM_Task", vm.ref.xml("_this"), fmt::format("PowerOff {}", vm_label(vm)), wait);
}

std::string power_state(Session& s, const Moref& vm) {
  std::vector<xml::Document> keep;
  return retrieve(s, vm, {"runtime.powerState"}, keep).get("runtime.powerState").text();
}

bool shutdown_guest(Session& s, const VmInfo& vm, std::chrono::seconds timeout, std::chrono::milliseconds poll) {
  if (power_state(s, vm.ref) == "poweredOff") return true;
  try {
    s.invoke("ShutdownGuest", vm.ref.xml("_this"));
  } catch (const SoapFault& f) {
    log::warn("vSphere {}: the guest of {} cannot be asked to shut down ({}); powering it off", s.host(),
              vm_label(vm), f.what());
    power_off(s, vm);
    return false;
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (power_state(s, vm.ref) == "poweredOff") return true;
    std::this_thread::sleep_for(poll);
  }
  if (power_state(s, vm.ref) == "poweredOff") return true;
  log::warn("vSphere {}: the guest of {} did not shut down within {} s; powering it off", s.host(), vm_label(vm),
            timeout.count());
  power_off(s, vm);
  return false;
}

}  // namespace mk::vsphere
