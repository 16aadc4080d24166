#include "source/vmware_source.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>

#include "common/error.h"
#include "common/log.h"
#include "common/server_probe.h"
#include "source/change_ids.h"
#include "vsphere/preflight.h"
#include "vsphere/vm_ops.h"

namespace mk::source {
namespace {

using vsphere::SoapFault;

// Device key -> changeId of the disks `vm` describes.
std::map<int, std::string> change_ids_of(const vsphere::VmInfo& vm) {
  std::map<int, std::string> out;
  for (const auto& d : vm.disks) out[d.key] = d.change_id;
  return out;
}

// What broke a pass without a snapshot that started on the disks `started` (device key
// -> changeId), as the VM is `now`, worded to follow "VM X ..."; "" when nothing did.
std::string what_changed(const vsphere::VmInfo& now, const std::map<int, std::string>& started) {
  if (now.power_state != "poweredOff") return fmt::format("was powered on (it is {} now)", now.power_state);
  for (const auto& [key, id] : started) {
    auto d = std::find_if(now.disks.begin(), now.disks.end(), [&](const auto& x) { return x.key == key; });
    if (d == now.disks.end()) return fmt::format("lost its disk {}", key);
    if (d->change_id != id) {
      return fmt::format("had its disk {} ({}) written (changeId \"{}\" at the start, \"{}\" now)", key, d->file_name,
                         id, d->change_id);
    }
  }
  return "";
}

std::string no_snapshot_id(const std::map<int, std::string>& started) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, id] : started) j[std::to_string(key)] = id;
  return std::string(kNoSnapshot) + j.dump();
}

// The changeIds a no_snapshot_id() names; nullopt when `id` is not one.
std::optional<std::map<int, std::string>> parse_no_snapshot_id(const std::string& id) {
  if (!id.starts_with(kNoSnapshot)) return std::nullopt;
  std::map<int, std::string> out;
  try {
    nlohmann::json j = nlohmann::json::parse(id.substr(kNoSnapshot.size()));  // outlives items()
    for (const auto& [key, cid] : j.items()) out[std::stoi(key)] = cid.get<std::string>();
  } catch (const std::exception& e) {
    throw SnapshotGone(fmt::format("the pass's record \"{}\" cannot be read ({})", id, e.what()));
  }
  return out;
}

class VmwarePass : public Pass {
 public:
  // `snapshot` empty: the pass reads the VM's own disks, which had the changeIds of
  // `vm.disks` (see the top of vmware_source.h).
  VmwarePass(std::shared_ptr<vsphere::Session> s, vsphere::VmInfo vm, vsphere::Moref snapshot)
      : s_(std::move(s)), vm_(std::move(vm)), snapshot_(std::move(snapshot)) {
    if (snapshot_.empty()) started_ = change_ids_of(vm_);
  }
  ~VmwarePass() override {
    try {
      close(false);
    } catch (const std::exception& e) {
      log::error("VM {}: cleaning up the pass failed: {}", vm_.name, e.what());
    }
  }

  const std::vector<DiskPass>& disks() const override { return disks_; }
  std::string snapshot_id() const override { return snapshot_.empty() ? no_snapshot_id(started_) : snapshot_.value; }
  double snapshot_seconds() const override { return snapshot_seconds_; }
  double snapshot_removal_seconds() const override { return removal_seconds_; }

  void close(bool succeeded) override {
    if (closed_) return;
    closed_ = true;
    readers_.clear();  // stops every nbdkit
    if (snapshot_.empty()) {
      log::info("VM {}: pass {}; it took no snapshot (the VM is powered off)", vm_.name,
                succeeded ? "succeeded" : "ended without success");
      return;
    }
    auto removing = std::chrono::steady_clock::now();
    vsphere::remove_snapshot(*s_, vm_, snapshot_);
    removal_seconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - removing).count();
    log::info("VM {}: pass {}; snapshot {} removed", vm_.name, succeeded ? "succeeded" : "ended without success",
              snapshot_.value);
  }

  void check_point_in_time() override {
    if (!snapshot_.empty()) return;  // a snapshot does not change
    std::string what = what_changed(vsphere::describe_vm(*s_, vm_.ref), started_);
    if (!what.empty()) {
      throw PointInTimeLost(fmt::format("VM {} ({}) {} during its pass without a snapshot (a powered-off VM's pass "
                                        "reads its own disks); nothing was made final; power it off and run the "
                                        "cutover (or the pass) again",
                                        vm_.name, vm_.instance_uuid, what));
    }
  }

  std::string resume_disk(const DiskKey& key, bool restart) override {
    check_still_there();
    std::lock_guard lock(mu_);
    size_t i = 0;
    while (i < disks_.size() && disks_[i].key != key) ++i;
    if (i == disks_.size() || closed_) throw Error(fmt::format("VM {}: the pass has no disk {}", vm_.name, key.str()));
    if (restart) {
      std::string old_log = log_tail(readers_[i]->log_path());  // why it stopped serving, if it said
      readers_[i].reset();  // the old nbdkit first: VDDK may hold the disk
      readers_[i] = start_reader_[i]();
      disks_[i].uri = readers_[i]->uri();
      log::info("VM {}: disk {} ({}): its reader was restarted on {}; the old reader's log: {}", vm_.name, key.str(),
                disks_[i].label, snapshot_.empty() ? "the VM's own disk" : "snapshot " + snapshot_.value,
                old_log.empty() ? "(empty)" : old_log);
    }
    return disks_[i].uri;
  }

  // Per disk, in the order of disks_: its reader, and how to start it again.
  std::vector<DiskPass> disks_;
  std::vector<std::unique_ptr<DiskReader>> readers_;
  std::vector<std::function<std::unique_ptr<DiskReader>()>> start_reader_;
  double snapshot_seconds_ = 0;  // set by VmwareSource::start_pass()

 private:
  // Throws SnapshotGone when the pass's point in time is gone: its snapshot was removed,
  // or (without a snapshot) the VM was powered on or its disks written.
  void check_still_there() {
    if (snapshot_.empty()) {
      std::string what = what_changed(vsphere::describe_vm(*s_, vm_.ref), started_);
      if (!what.empty()) {
        throw SnapshotGone(fmt::format("VM {} ({}) {} since its pass without a snapshot started", vm_.name,
                                       vm_.instance_uuid, what));
      }
      return;
    }
    bool found = false;
    for (const auto& snap : vsphere::list_snapshots(*s_, vm_.ref)) found = found || snap.ref.value == snapshot_.value;
    if (!found) {
      throw SnapshotGone(fmt::format("VM {} ({}) no longer has the pass's snapshot {} (removed in vSphere meanwhile?)",
                                     vm_.name, vm_.instance_uuid, snapshot_.value));
    }
  }

  std::shared_ptr<vsphere::Session> s_;
  vsphere::VmInfo vm_;
  vsphere::Moref snapshot_;
  std::map<int, std::string> started_;  // without a snapshot: device key -> changeId at the start
  double removal_seconds_ = 0;
  std::mutex mu_;  // resume_disk() runs in the disks' copy threads: a slot of readers_ and disks_ at a time
  bool closed_ = false;
};

// "migratekit-owner=<owner>;": how a snapshot's description names who took it.
std::string owner_marker(const std::string& owner) { return "migratekit-owner=" + owner + ";"; }

std::string default_owner() {
  char host[256] = {0};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') return "host-unknown";
  std::string out = "host-";
  for (char c : std::string(host)) out += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '_';
  return out;
}

void check_owner(const std::string& owner) {
  bool ok = !owner.empty() && owner.size() <= 64;
  for (unsigned char c : owner) ok &= std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == ':';
  if (!ok) throw UsageError(fmt::format("snapshot owner \"{}\": use 1-64 letters, digits, '-', '_', '.', ':'", owner));
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:%Y%m%dT%H%M%SZ}", tm);
}

}  // namespace

VmwareSource::VmwareSource(std::shared_ptr<vsphere::Session> session, vsphere::ConnectOptions connect,
                           VmwareSourceOptions options)
    : session_(std::move(session)), connect_(std::move(connect)), options_(std::move(options)) {
  if (options_.snapshot_prefix.size() < 4) {
    throw UsageError("the snapshot prefix must have at least 4 characters: it is how leftovers are recognised");
  }
  if (options_.work_dir.empty()) throw UsageError("VmwareSource: no work directory for reader sockets");
  if (options_.owner.empty()) options_.owner = default_owner();
  check_owner(options_.owner);
}

bool VmwareSource::is_ours(const vsphere::SnapshotRef& snap) const {
  return snap.name.starts_with(options_.snapshot_prefix) &&
         snap.description.find(owner_marker(options_.owner)) != std::string::npos;
}

std::vector<VmSummary> VmwareSource::list_vms() {
  std::vector<VmSummary> out;
  for (auto& vm : vsphere::list_vms(*session_)) {
    if (!vm.is_template) out.push_back({vm.instance_uuid, vm.name, vm.power_state});
  }
  return out;
}

vsphere::VmInfo VmwareSource::find(const std::string& vm_id) {
  auto ref = vsphere::find_vm_by_instance_uuid(*session_, vm_id);
  if (!ref) {
    throw Error(fmt::format("vSphere {}: no VM with instance UUID {} (deleted, or not visible to user {})",
                            session_->host(), vm_id, connect_.user));
  }
  return vsphere::describe_vm(*session_, *ref);
}

std::vector<DiskDescription> VmwareSource::describe_disks(const std::string& vm_id) {
  std::vector<DiskDescription> out;
  for (auto& d : find(vm_id).disks) out.push_back({DiskKey(d.key), d.file_name, d.capacity_bytes, d.change_id});
  return out;
}

int VmwareSource::remove_leftover_snapshots(const vsphere::VmInfo& vm, const std::set<std::string>& keep) {
  int n = 0;
  for (auto& snap : vm.snapshots) {
    if (!is_ours(snap) || keep.count(snap.ref.value)) continue;
    log::warn("VM {}: removing leftover snapshot \"{}\" ({}) of an earlier run of {}", vm.name, snap.name,
              snap.ref.value, options_.owner);
    vsphere::remove_snapshot(*session_, vm, snap.ref);
    ++n;
  }
  return n;
}

int VmwareSource::remove_all_leftover_snapshots(
    const std::function<std::unique_lock<std::mutex>(const std::string&)>& lock_vm, std::vector<std::string>& errors,
    const std::set<std::string>& keep) {
  int n = 0;
  for (auto& found : vsphere::list_all_snapshots(*session_, errors)) {
    if (std::none_of(found.snapshots.begin(), found.snapshots.end(),
                     [&](auto& s) { return is_ours(s) && !keep.count(s.ref.value); }))
      continue;
    try {
      auto lock = lock_vm(found.instance_uuid);
      // Under the lock, as the VM is now: a pass that ended meanwhile removed its own.
      n += remove_leftover_snapshots(vsphere::describe_vm(*session_, found.ref), keep);
    } catch (const std::exception& e) {
      errors.push_back(fmt::format("VM {} ({}): removing leftover snapshots failed: {}", found.name,
                                   found.instance_uuid, e.what()));
    }
  }
  return n;
}

void VmwareSource::plan_areas(const vsphere::VmInfo& vm, const vsphere::Moref& snap, const vsphere::DiskInfo& disk,
                              const std::optional<std::string>& stored, DiskPass& d) {
  std::string label = fmt::format("{} of VM {}", disk.file_name, vm.name);
  ChangeIdDecision dec = decide_change_id(stored, disk.change_id, label);
  d.full = dec.full;
  d.reason = dec.reason;
  if (dec.full && (stored || options_.targets_may_hold_data)) {
    // The target holds (or may hold) an earlier pass: the whole disk, so that areas no
    // longer allocated on the source are zeroed there too. No "*" query: its answer
    // would be discarded.
    if (!stored) d.reason += "; the whole disk, since the target may hold an earlier copy";
    log::warn("{}", d.reason);
    return;
  }
  try {
    d.request.changed_areas =
        vsphere::query_changed_disk_areas(*session_, vm.ref, snap, disk.key, disk.capacity_bytes, dec.query);
    log::info("{}", dec.reason);
  } catch (const SoapFault& f) {
    if (f.type() == "NotAuthenticated") throw;  // the session could not log in again: not the disk's fault
    d.full = true;
    d.reason = fmt::format("disk {}: full pass of the whole disk: vSphere could not answer QueryChangedDiskAreas "
                           "for change ID \"{}\" ({}: {})",
                           label, dec.query, f.type(), f.fault_message());
    d.request.changed_areas.reset();
    log::warn("{}", d.reason);
  }
}

std::unique_ptr<Pass> VmwareSource::open_pass(const std::string& vm_id, const ChangeIds& stored) {
  vsphere::VmInfo vm = find(vm_id);
  auto findings = vsphere::preflight(vm, {options_.snapshot_prefix, options_.enable_cbt});
  if (!findings.empty()) {
    throw UsageError(fmt::format("VM {} ({}) cannot be replicated; nothing was changed on it:{}", vm.name, vm_id,
                                 vsphere::describe_findings(findings)));
  }
  remove_leftover_snapshots(vm);
  bool tracked = vm.cbt_enabled && !vm.disks.empty() &&
                 std::all_of(vm.disks.begin(), vm.disks.end(), [](const auto& d) { return !d.change_id.empty(); });
  if (vm.power_state == "poweredOff" && tracked) {
    // Off, CBT active: its disks cannot change unless it is powered on (see the top).
    log::info("VM {}: powered off with Changed Block Tracking active: the pass reads its disks without a snapshot",
              vm.name);
    return start_pass(vm, {}, stored);
  }
  auto taking = std::chrono::steady_clock::now();
  if (!vm.cbt_enabled) {  // the preflight refused it unless enabling is allowed
    log::info("VM {}: enabling Changed Block Tracking", vm.name);
    vsphere::set_change_tracking(*session_, vm, true);
    // CBT becomes active at the next stun/unstun of the VM: a snapshot created and removed.
    // A crash in between leaves a snapshot with our prefix, removed by the next pass.
    auto activation = vsphere::create_snapshot(*session_, vm, options_.snapshot_prefix + "cbt-activation",
                                               "MigrateKit OSSEA: activates Changed Block Tracking; " +
                                                   owner_marker(options_.owner));
    vsphere::remove_snapshot(*session_, vm, activation);
  }
  auto snap = vsphere::create_snapshot(*session_, vm, options_.snapshot_prefix + utc_now(),
                                       "MigrateKit OSSEA replication pass; removed when the pass ends; " +
                                           owner_marker(options_.owner));
  double taking_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - taking).count();
  return start_pass(vm, snap, stored, taking_seconds);
}

std::unique_ptr<Pass> VmwareSource::resume_pass(const std::string& vm_id, const std::string& snapshot,
                                                const ChangeIds& stored) {
  vsphere::VmInfo vm = find(vm_id);
  if (auto started = parse_no_snapshot_id(snapshot)) {
    std::string what = what_changed(vm, *started);
    if (!what.empty()) {
      throw SnapshotGone(fmt::format("VM {} ({}) {} since its pass without a snapshot started", vm.name, vm_id, what));
    }
    remove_leftover_snapshots(vm);
    log::info("VM {}: resuming the pass without a snapshot (the VM is still powered off, its disks unchanged)",
              vm.name);
    return start_pass(vm, {}, stored);
  }
  const vsphere::SnapshotRef* found = nullptr;
  for (const auto& s : vm.snapshots) {
    if (s.ref.value == snapshot && is_ours(s)) found = &s;
  }
  if (!found) {
    throw SnapshotGone(fmt::format("VM {} ({}) no longer has the pass's snapshot {} (removed in vSphere meanwhile?)",
                                   vm.name, vm_id, snapshot));
  }
  vsphere::Moref snap = found->ref;
  remove_leftover_snapshots(vm, {snapshot});
  log::info("VM {}: resuming the pass on its snapshot \"{}\" ({})", vm.name, found->name, snapshot);
  return start_pass(vm, snap, stored);
}

std::function<std::unique_ptr<DiskReader>()> VmwareSource::reader_for(const vsphere::VmInfo& vm,
                                                                       const vsphere::Moref& snap,
                                                                       const vsphere::DiskInfo& disk) const {
  if (options_.flat_file_for) {
    return [flat = options_.flat_file_for(disk), work = options_.work_dir, rate = options_.vddk.read_rate] {
      return DiskReader::start_file(flat, work, std::chrono::seconds(30), rate);
    };
  }
  VddkParams p = options_.vddk;
  p.server = session_->host();
  p.port = session_->port();
  p.user = connect_.user;
  p.password_file = std::filesystem::absolute(connect_.password_file).string();
  p.thumbprint = session_->thumbprint();
  p.vm_moref = vm.ref.value;
  p.snapshot_moref = snap.value;
  p.file = disk.file_name;
  return [p, work = options_.work_dir] { return DiskReader::start_vddk(p, work); };
}

std::unique_ptr<Pass> VmwareSource::start_pass(const vsphere::VmInfo& vm, const vsphere::Moref& snap,
                                               const ChangeIds& stored, double taking_seconds) {
  using Clock = std::chrono::steady_clock;
  auto pass = std::make_unique<VmwarePass>(session_, vm, snap);  // from here on, close() cleans up
  // Without a snapshot: the VM's own disks, as describe_vm() saw them.
  auto reading = Clock::now();
  auto disks = snap.empty() ? vm.disks : vsphere::snapshot_disks(*session_, snap);
  if (!snap.empty()) {
    pass->snapshot_seconds_ = taking_seconds + std::chrono::duration<double>(Clock::now() - reading).count();
  }
  // vCenter answers the change queries (one disk after another) in a thread of their own
  // while this one starts every disk's reader, an nbdkit process each. The readers start
  // here, not there: nbdkit asks for a signal when the thread that started it ends.
  auto queries = std::async(std::launch::async, [&] {
    std::vector<DiskPass> planned;
    for (const auto& disk : disks) {
      DiskPass d;
      d.key = DiskKey(disk.key);
      d.label = disk.file_name;
      d.capacity = disk.capacity_bytes;
      auto it = stored.find(d.key);
      auto asked = Clock::now();
      plan_areas(vm, snap, disk, it == stored.end() ? std::nullopt : std::optional(it->second), d);
      d.change_query_seconds = std::chrono::duration<double>(Clock::now() - asked).count();
      d.change_id_to_store = disk.change_id;
      planned.push_back(std::move(d));
    }
    return std::make_pair(std::move(planned), Clock::now());
  });
  std::vector<Clock::time_point> ready;
  for (const auto& disk : disks) {
    pass->start_reader_.push_back(reader_for(vm, snap, disk));
    pass->readers_.push_back(pass->start_reader_.back()());
    ready.push_back(Clock::now());
  }
  auto [planned, answered] = queries.get();
  // A disk's reader start is what the pass waited for that reader once the change
  // queries were answered: the time the pass took to open, less its change queries, is
  // the readers' (and the snapshot's, and finding the VM's).
  auto waited_until = answered;
  for (size_t i = 0; i < planned.size(); ++i) {
    planned[i].uri = pass->readers_[i]->uri();
    planned[i].reader_start_seconds =
        ready[i] > waited_until ? std::chrono::duration<double>(ready[i] - waited_until).count() : 0.0;
    waited_until = std::max(waited_until, ready[i]);
    pass->disks_.push_back(std::move(planned[i]));
  }
  // Powered on while the pass opened: QueryChangedDiskAreas may have answered before, and
  // the flat-file reader of labs cannot tell.
  pass->check_point_in_time();
  return pass;
}

}  // namespace mk::source
