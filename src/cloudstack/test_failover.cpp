#include "cloudstack/test_failover.h"

#include <fmt/format.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "cloudstack/names.h"
#include "common/log.h"

namespace mk::cloudstack {
namespace {

bool exists(const Client& client, const char* command, const char* key, const std::string& id) {
  Json reply = client.call(command, {{"id", id}, {"listall", "true"}});
  return !json_array(reply, key).empty();
}

}  // namespace

TestFailover::TestFailover(const Client& client, const VmBuilder& builder, Exports& exports,
                           std::string test_network_id, GuestConversion* conversion)
    : client_(client), builder_(builder), exports_(exports),
      test_network_id_(std::move(test_network_id)), conversion_(conversion) {
  if (test_network_id_.empty()) throw UsageError("test failover: no test network configured");
}

TestFailoverRecord TestFailover::start(const SourceVm& vm, StepLog& steps) {
  TestFailoverRecord record;
  start(vm, steps, record);
  return record;
}

void TestFailover::start(const SourceVm& vm, StepLog& steps, TestFailoverRecord& record) {
  builder_.check(vm);
  record = {};
  record.vm_name = test_vm_host_name(vm.name, vm.vm_uuid, std::time(nullptr));
  changed(record);
  std::string step;
  try {
    steps.begin(step = "detach-from-oma");
    for (const auto& d : vm.disks) {
      record.unexported.push_back(d.disk.disk_key);
      changed(record);
      exports_.remove(d.disk);
      builder_.detach_volume(d);
    }
    steps.done();

    // Detached first: on KVM a volume attached to a running VM (the OMA) cannot be
    // snapshotted unless kvm.snapshot.enabled, which is off by default.
    steps.begin(step = "snapshot-volumes");
    for (const auto& d : vm.disks) {
      Json r = client_.call_async("createSnapshot",
                                  {{"volumeid", d.volume_id},
                                   {"name", fmt::format("{}-disk-{}", record.vm_name,
                                                        d.disk.disk_key)}});
      record.snapshots[d.volume_id] = json_text(json_object(r, "snapshot"), "id");
      changed(record);
    }
    steps.done();

    if (conversion_) {
      // After the snapshots: the cleanup's revert undoes the conversion. The volumes come
      // to the OMA's VM for it (no export: nothing may replicate into them now) and leave
      // it again, also when the conversion failed, so that the rollback reverts them.
      steps.begin(step = "guest-conversion");
      record.conversion_began = true;
      changed(record);
      std::vector<std::string> devices;
      std::string detail;
      try {
        for (const auto& d : unit_order(vm)) devices.push_back(builder_.volumes().attach_to_oma(d.volume_id, d.disk));
        detail = conversion_->convert(vm, devices);
      } catch (...) {
        for (const auto& d : vm.disks) {
          try {
            builder_.detach_volume(d);
          } catch (const std::exception& e) {
            log::error("test failover of VM {}: volume {} stays on the OMA's VM after a failed conversion: {}",
                       vm.name, d.volume_id, e.what());
          }
        }
        throw;
      }
      for (const auto& d : vm.disks) builder_.detach_volume(d);
      steps.done(detail);
    }

    steps.begin(step = "deploy-vm");
    DeployRequest request = builder_.request_for(vm, record.vm_name, test_network_id_);
    builder_.deploy(request, record.vm_id);
    changed(record);
    std::string fit = request.fit();
    steps.done(fmt::format("{}{}{}", record.vm_id,
                           vm.nics.size() > 1 ? fmt::format(": one NIC on the test network for the source's {}",
                                                            vm.nics.size())
                                              : "",
                           fit.empty() ? "" : (vm.nics.size() > 1 ? "; " : ": ") + fit));

    steps.begin(step = "replace-root");
    builder_.replace_root(record.vm_id, vm);
    steps.done();

    steps.begin(step = "attach-data-disks");
    builder_.attach_data_disks(record.vm_id, vm);
    steps.done();

    steps.begin(step = "start-vm");
    builder_.start(record.vm_id);
    steps.done();
  } catch (const std::exception& e) {
    steps.failed(e.what());
    std::string why = e.what();
    try {
      undo(vm, record, steps, Undo::Rollback);
    } catch (const std::exception& rb) {
      throw CutoverError(step, fmt::format("test failover of VM {} failed at step {}: {}; "
                                           "ROLLBACK INCOMPLETE: {}",
                                           vm.name, step, why, rb.what()));
    }
    throw CutoverError(step, fmt::format("test failover of VM {} failed at step {}: {}; rolled "
                                         "back: the volumes are on the OMA again",
                                         vm.name, step, why));
  }
}

void TestFailover::cleanup(const SourceVm& vm, const TestFailoverRecord& record, StepLog& steps) {
  undo(vm, record, steps, Undo::Cleanup);
}

void TestFailover::undo_in_cloud(const SourceVm& vm, const TestFailoverRecord& record, StepLog& steps) {
  undo(vm, record, steps, Undo::CloudOnly);
}

// Cleanup and rollback are the same walk back; each part skips what is already gone and
// goes on after a failure, so one run does as much as it can. Throws at the end if any
// part failed.
void TestFailover::undo(const SourceVm& vm, const TestFailoverRecord& record, StepLog& steps, Undo how) {
  const std::string prefix = how == Undo::Rollback ? "rollback-" : how == Undo::CloudOnly ? "takeover-" : "";
  std::vector<std::string> problems;
  auto part = [&](const std::string& name, auto&& body) {
    steps.begin(prefix + name);
    try {
      steps.done(body());
    } catch (const std::exception& e) {
      steps.failed(e.what());
      problems.push_back(name + ": " + e.what());
    }
  };
  part("destroy-test-vm", [&]() -> std::string {
    std::string vm_id = record.vm_id;
    if (vm_id.empty() && !record.vm_name.empty()) {
      // A deploy whose answer never arrived may have made it: the test VM's name (with
      // its timestamp) is this test failover's alone.
      DeployRequest made;
      made.name = record.vm_name;
      made.display_name = vm.name;
      vm_id = builder_.find_deployed(made);
    }
    return vm_id.empty() ? "" : builder_.tear_down(vm_id, vm);
  });
  // A volume goes back to the OMA only once reverted: the test VM's writes must never
  // mix with the next incremental pass. A snapshot already gone was reverted by an
  // earlier cleanup run (snapshots are deleted only after their revert).
  std::set<std::string> reverted;
  part("revert-snapshots", [&]() -> std::string {
    std::string first_error;
    for (const auto& [volume, snapshot] : record.snapshots) {
      try {
        // A volume still on the OMA never reached the test VM: nothing to undo on it,
        // unless the guest conversion wrote it there and a failed detach left it there
        // (its snapshot not yet reverted): it leaves the OMA's VM to be reverted.
        const auto& volumes = builder_.volumes();
        bool on_oma = volumes.get(volume).virtual_machine_id == volumes.config().oma_vm_id;
        bool snapshot_left = !snapshot.empty() && exists(client_, "listSnapshots", "snapshot", snapshot);
        if (on_oma && snapshot_left && record.conversion_began) {
          for (const auto& d : vm.disks) {
            if (d.volume_id == volume) volumes.detach(volume, d.disk);
          }
          on_oma = false;
        }
        if (!on_oma && snapshot_left) client_.call_async("revertSnapshot", {{"id", snapshot}});
        reverted.insert(volume);
      } catch (const std::exception& e) {
        if (first_error.empty()) {
          first_error = fmt::format("volume {} (snapshot {}): {}", volume, snapshot, e.what());
        }
      }
    }
    if (!first_error.empty()) throw Error(first_error);
    return "";
  });
  part("delete-snapshots", [&]() -> std::string {
    for (const auto& [volume, snapshot] : record.snapshots) {
      if (reverted.count(volume) && !snapshot.empty() &&
          exists(client_, "listSnapshots", "snapshot", snapshot)) {
        client_.call_async("deleteSnapshot", {{"id", snapshot}});
      }
    }
    return "";
  });
  if (how != Undo::CloudOnly) part("return-to-oma", [&]() -> std::string {
    std::vector<SourceDisk> unexported;
    for (const auto& d : attach_order(vm)) {
      bool removed = std::find(record.unexported.begin(), record.unexported.end(),
                               d.disk.disk_key) != record.unexported.end();
      bool clean = reverted.count(d.volume_id) || !record.snapshots.count(d.volume_id);
      if (removed && clean) unexported.push_back(d);
    }
    std::string error = builder_.return_to_oma(unexported, exports_);
    if (!error.empty()) throw Error(error);
    return "";
  });
  if (!problems.empty()) {
    std::string text;
    for (const auto& p : problems) text += (text.empty() ? "" : "; ") + p;
    throw Error(fmt::format("test failover cleanup of VM {} ({}) incomplete: {}; run the "
                            "cleanup again once the cause is fixed",
                            vm.name, vm.vm_uuid, text));
  }
}

}  // namespace mk::cloudstack
