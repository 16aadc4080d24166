#include "cloudstack/cutover.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <thread>

#include "common/log.h"

namespace mk::cloudstack {

Cutover::Cutover(const VmBuilder& builder, SourcePower& power, FinalPass& final_pass,
                 Exports& exports, CutoverOptions options, GuestConversion* conversion)
    : builder_(builder),
      power_(power),
      final_pass_(final_pass),
      exports_(exports),
      options_(options),
      conversion_(conversion) {}

bool Cutover::stop_source(const std::string& vm_uuid) {
  if (!power_.is_powered_on(vm_uuid)) return false;
  power_.shutdown_guest(vm_uuid);
  const auto deadline = std::chrono::steady_clock::now() + options_.shutdown_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (!power_.is_powered_on(vm_uuid)) return true;
    std::this_thread::sleep_for(options_.power_poll);
  }
  if (!power_.is_powered_on(vm_uuid)) return true;
  log::warn("source VM {} did not shut down within {} s; powering it off", vm_uuid,
            std::chrono::duration_cast<std::chrono::seconds>(options_.shutdown_timeout).count());
  power_.power_off(vm_uuid);
  return true;
}

std::string Cutover::run(const SourceVm& vm, StepLog& steps) {
  CutoverRecord record;
  return run(vm, steps, record);
}

std::string Cutover::run(const SourceVm& vm, StepLog& steps, CutoverRecord& record) {
  builder_.check(vm);  // UsageError: nothing done yet
  record = {};
  std::string step;
  try {
    steps.begin(step = "final-pass");
    record.source_was_on = power_.is_powered_on(vm.vm_uuid);
    if (options_.record_changed) options_.record_changed(record);
    bool powered_off_by_us = stop_source(vm.vm_uuid);
    final_pass_.run(vm.vm_uuid);
    steps.done(powered_off_by_us ? "source powered off by this cutover" : "source was already off");

    if (conversion_) {
      // Still on the OMA's VM: its devices are the volumes. Nothing else writes them now
      // (the job holds the VM: no pass runs).
      steps.begin(step = "guest-conversion");
      std::vector<std::string> devices;
      for (const auto& d : unit_order(vm)) devices.push_back(builder_.volumes().wait_for_device(d.volume_id, d.disk));
      record.volumes_changed = true;  // written ahead: if this node dies now, nobody knows
      if (options_.record_changed) options_.record_changed(record);
      std::string detail;
      try {
        detail = conversion_->convert(vm, devices);
      } catch (const ConversionChangedVolumes&) {
        throw;
      } catch (...) {
        record.volumes_changed = false;  // GuestConversion's promise: a failure writes nothing
        throw;
      }
      steps.done(detail);
    }

    steps.begin(step = "detach-from-oma");
    for (const auto& d : vm.disks) {
      record.unexported.push_back(d.disk.disk_key);
      if (options_.record_changed) options_.record_changed(record);
      exports_.remove(d.disk);
      builder_.detach_volume(d);
    }
    steps.done();

    steps.begin(step = "deploy-vm");
    std::string name = builder_.free_host_name(vm);
    DeployRequest request = builder_.request_for(vm, name);
    record.deploying = name;
    if (options_.record_changed) options_.record_changed(record);
    try {
      builder_.deploy(request, record.vm_id);
      if (options_.record_changed) options_.record_changed(record);
    } catch (const ApiError&) {
      throw;  // CloudStack refused it, or its job failed (record.vm_id names what it made)
    } catch (const std::exception&) {
      // No answer: CloudStack may have made the VM without telling us its id.
      if (record.vm_id.empty()) record.lost_deploy = name;
      throw;
    }
    std::string fit = request.fit();
    steps.done(fmt::format("{}{}{}", name == vm.name ? record.vm_id : fmt::format("{} (named {})", record.vm_id, name),
                           fit.empty() ? "" : ": ", fit));

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
    std::string left = rollback(vm, record, steps);
    throw CutoverError(step, fmt::format("cutover of VM {} ({}) failed at step {}: {}; {}", vm.name, vm.vm_uuid, step,
                                         e.what(),
                                         left.empty() ? "rolled back: the volumes are on the OMA again and "
                                                        "the source is as it was"
                                                      : "ROLLBACK INCOMPLETE: " + left));
  }
  return record.vm_id;
}

void Cutover::finish_rollback(const SourceVm& vm, const CutoverRecord& record, StepLog& steps) {
  std::string left = rollback(vm, record, steps);
  if (!left.empty()) {
    throw CutoverError("rollback", fmt::format("rollback of the cutover of VM {} ({}): ROLLBACK INCOMPLETE: {}",
                                               vm.name, vm.vm_uuid, left));
  }
}

// Which of our volumes are on CloudStack VM `vm_id`, and what to do with it by hand.
std::string Cutover::volumes_on(const SourceVm& vm, const std::string& vm_id) const {
  std::string list;
  try {
    for (const auto& d : vm.disks) {
      if (builder_.volumes().get(d.volume_id).virtual_machine_id != vm_id) continue;
      list += fmt::format("{}volume {} (disk {})", list.empty() ? "" : ", ", d.volume_id, d.disk.disk_key);
    }
  } catch (const std::exception& e) {
    return fmt::format("which of our volumes are on it could not be read ({}): detach any of ours from it, then "
                       "destroy it with expunge",
                       e.what());
  }
  if (list.empty()) return "none of our volumes is on it: destroy it with expunge";
  return fmt::format("our {} on it: detach them from it, then destroy it with expunge", list);
}

// Where a volume that did not come back to the OMA is now, and what to do about it.
std::string Cutover::whereabouts(const SourceDisk& d) const {
  try {
    const Volume v = builder_.volumes().get(d.volume_id);
    if (v.virtual_machine_id.empty()) return "it is detached: attach it to the OMA's VM";
    if (v.virtual_machine_id == builder_.volumes().config().oma_vm_id) {
      return "it is attached to the OMA's VM but not exported";
    }
    return fmt::format("it is attached to VM {}: detach it from there and attach it to the OMA's VM",
                       v.virtual_machine_id);
  } catch (const std::exception& e) {
    return fmt::format("where it is could not be read ({}): make sure it is attached to the OMA's VM", e.what());
  }
}

// Each part goes on past a failure of the others, so one run does all it can; what is
// already undone is skipped, so it can run again.
std::string Cutover::rollback(const SourceVm& vm, const CutoverRecord& record, StepLog& steps) {
  steps.begin("rollback");
  std::vector<std::string> left;
  std::string note;
  std::string vm_id = record.vm_id;
  if (vm_id.empty() && !record.lost_deploy.empty()) {
    try {
      DeployRequest made;
      made.name = record.lost_deploy;
      made.display_name = vm.name;
      vm_id = builder_.find_deployed(made);
      if (!vm_id.empty()) log::warn("VM {} ({}) was made by a deploy whose answer was lost: removing it", vm_id, made.name);
    } catch (const std::exception& e) {
      left.push_back(fmt::format("a CloudStack VM named {} may have been made by a deploy whose answer was lost, and "
                                 "looking for it failed: {}; destroy it if it exists",
                                 record.lost_deploy, e.what()));
    }
  }
  if (!vm_id.empty()) {
    try {
      note = builder_.tear_down(vm_id, vm);
    } catch (const std::exception& e) {
      left.push_back(fmt::format("CloudStack VM {} is still there: removing it failed: {}; {}", vm_id, e.what(),
                                 volumes_on(vm, vm_id)));
    }
  }
  for (const auto& d : vm.disks) {
    if (std::find(record.unexported.begin(), record.unexported.end(), d.disk.disk_key) == record.unexported.end())
      continue;
    std::string error = builder_.return_to_oma({d}, exports_);
    if (error.empty()) continue;
    left.push_back(fmt::format("volume {} (disk {}) is not back on the OMA: {}; {}", d.volume_id, d.disk.disk_key,
                               error, whereabouts(d)));
  }
  if (record.source_was_on) {
    // Checked, not assumed: a shutdown that failed half-way may have stopped it anyway.
    std::optional<bool> on;
    try {
      on = power_.is_powered_on(vm.vm_uuid);
      if (!*on) power_.power_on(vm.vm_uuid);
    } catch (const std::exception& e) {
      left.push_back(fmt::format("the source VM {} ({}) {}: {}; power it on in vCenter",
                                 vm.name, vm.vm_uuid,
                                 on ? "is still powered OFF: powering it on again failed"
                                    : "may still be powered OFF: its power state could not be read",
                                 e.what()));
    }
  }
  if (left.empty()) {
    steps.done(note);
    return "";
  }
  std::string text;
  for (const auto& p : left) text += (text.empty() ? "" : "; ") + p;
  text += "; fix the cause (or do these by hand) and run the rollback again: what is already undone is skipped";
  steps.failed(text);
  return text;
}

}  // namespace mk::cloudstack
