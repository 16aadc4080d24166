#include "cloudstack/cutover.h"

#include <fmt/format.h>

#include <thread>

#include "common/log.h"

namespace mk::cloudstack {

Cutover::Cutover(const VmBuilder& builder, SourcePower& power, FinalPass& final_pass,
                 Exports& exports, CutoverOptions options)
    : builder_(builder),
      power_(power),
      final_pass_(final_pass),
      exports_(exports),
      options_(options) {}

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
  builder_.check(vm);  // UsageError: nothing done yet
  std::string step;
  std::string vm_id;
  std::vector<SourceDisk> unexported;  // disks whose export was removed: to give back
  bool source_was_on = false;
  try {
    steps.begin(step = "final-pass");
    source_was_on = power_.is_powered_on(vm.vm_uuid);
    bool powered_off_by_us = stop_source(vm.vm_uuid);
    final_pass_.run(vm.vm_uuid);
    steps.done(powered_off_by_us ? "source powered off by this cutover" : "source was already off");

    steps.begin(step = "detach-from-oma");
    for (const auto& d : vm.disks) {
      unexported.push_back(d);
      exports_.remove(d.disk);
      builder_.detach_volume(d);
    }
    steps.done();

    steps.begin(step = "deploy-vm");
    std::string name = builder_.free_host_name(vm);
    builder_.deploy(builder_.request_for(vm, name), vm_id);
    steps.done(name == vm.name ? vm_id : fmt::format("{} (named {})", vm_id, name));

    steps.begin(step = "replace-root");
    builder_.replace_root(vm_id, vm);
    steps.done();

    steps.begin(step = "attach-data-disks");
    builder_.attach_data_disks(vm_id, vm);
    steps.done();

    steps.begin(step = "start-vm");
    builder_.start(vm_id);
    steps.done();
  } catch (const std::exception& e) {
    steps.failed(e.what());
    rollback(vm, steps, vm_id, unexported, source_was_on);
    const Step* rb = steps.find("rollback");
    throw CutoverError(step, fmt::format("cutover of VM {} ({}) failed at step {}: {}; {}",
                                         vm.name, vm.vm_uuid, step, e.what(),
                                         rb && rb->status == StepStatus::Done
                                             ? "rolled back: the volumes are on the OMA again and "
                                               "the source is as it was"
                                             : "ROLLBACK INCOMPLETE: " + (rb ? rb->detail : "")));
  }
  return vm_id;
}

void Cutover::rollback(const SourceVm& vm, StepLog& steps, const std::string& vm_id,
                       const std::vector<SourceDisk>& unexported, bool source_was_on) {
  steps.begin("rollback");
  std::vector<std::string> problems;
  std::string note;
  if (!vm_id.empty()) {
    try {
      note = builder_.tear_down(vm_id, vm);
    } catch (const std::exception& e) {
      problems.push_back(fmt::format("removing VM {}: {}", vm_id, e.what()));
    }
  }
  if (!unexported.empty()) {
    std::string error = builder_.return_to_oma(unexported, exports_);
    if (!error.empty()) problems.push_back("returning volumes to the OMA: " + error);
  }
  if (source_was_on) {
    // Checked, not assumed: a shutdown that failed half-way may have stopped it anyway.
    try {
      if (!power_.is_powered_on(vm.vm_uuid)) power_.power_on(vm.vm_uuid);
    } catch (const std::exception& e) {
      problems.push_back(fmt::format("powering the source on again: {}", e.what()));
    }
  }
  if (problems.empty()) {
    steps.done(note);
    return;
  }
  std::string text;
  for (const auto& p : problems) text += (text.empty() ? "" : "; ") + p;
  steps.failed(text);
}

}  // namespace mk::cloudstack
