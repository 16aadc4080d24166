#include "oma/cutover/inspection_service.h"

#include <fmt/format.h>

#include "common/log.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {

std::vector<guest::DiskImage> readable_replicas(VmRepository& vms, StorageRepository& storage, const VmRecord& vm,
                                                const char* what) {
  if (vm.status == VmStatus::CutOver) {
    throw Conflict(fmt::format("VM {} ({}) has been cut over: a {} reads the replicas before cutover", vm.vm_id,
                               vm.name, what));
  }
  if (vm.current_job_id) {
    throw Conflict(fmt::format("VM {} ({}) has an active job {} (status {}): a {} reads the replicas, which must not "
                               "change under it; wait for that job, then start the {}",
                               vm.vm_id, vm.name, *vm.current_job_id, enum_name(vm.status), what, what));
  }
  std::vector<guest::DiskImage> images;
  const auto disks = vms.list_disks(vm.vm_id);  // unit order
  if (disks.empty()) throw Conflict(fmt::format("VM {} ({}) has no disks", vm.vm_id, vm.name));
  for (const DiskRecord& d : disks) {
    auto volume = storage.find_volume(vm.vm_id, d.disk_key);
    if (!volume || !d.change_id) {
      throw Conflict(fmt::format("VM {} ({}) has no replica of disk {} (unit {}) yet: run a full replication first "
                                 "(POST /api/v1/jobs), then the {}",
                                 vm.vm_id, vm.name, d.disk_key, d.unit, what));
    }
    images.push_back({volume->device_path, "raw"});
  }
  if (vm.status != VmStatus::Replicated) {
    throw Conflict(fmt::format("VM {} ({}) is {}: its replicas may be half-way through a pass; run an incremental "
                               "pass that completes, then the {}",
                               vm.vm_id, vm.name, enum_name(vm.status), what));
  }
  return images;
}

InspectionService::InspectionService(VmRepository& vms, JobRepository& job_log, StorageRepository& storage,
                                     InspectionRepository& results, ConfigRepository& config, JobManager& jobs,
                                     VmaForVm vma_for, InspectionConfig options)
    : vms_(vms), job_log_(job_log), storage_(storage), results_(results), config_repo_(config), jobs_(jobs),
      vma_for_(std::move(vma_for)), config_(std::move(options)) {
  if (!config_.inspect) config_.inspect = guest::inspect_guest;
}

std::string InspectionService::start(const std::string& vm_id, const std::string& started_by) {
  check_uuid(vm_id, "vm_id");
  VmRecord vm = vms_.get_vm(vm_id);
  std::vector<guest::DiskImage> images = readable_replicas(vms_, storage_, vm, "inspection");
  if (stopping_) throw Error("the OMA is stopping: no inspection starts now");
  return jobs_.start_custom(vm_id, JobKind::Inspection, false, [=, this](const JobRecord& job) {
    return run(job, vm, images, started_by);
  });
}

VmStatus InspectionService::run(const JobRecord& job, const VmRecord& vm, const std::vector<guest::DiskImage>& images,
                                const std::string& started_by) {
  const std::string& id = job.job_id;
  vms_.set_vm_status(vm.vm_id, VmStatus::Inspecting);
  job_log_.add_event(id, EventLevel::Info,
                     fmt::format("inspection of VM {} ({} disk(s)) started by {}: the replicas are only read", vm.name,
                                 images.size(), started_by));
  const int64_t step = job_log_.begin_step(id, "guest-inspection");
  job_log_.set_job_status(id, JobStatus::Running, "inspecting the guest (read-only)");
  guest::GuestInspection g;
  try {
    guest::InspectOptions io;
    io.timeout = config_.timeout;
    io.cancel = &stopping_;
    g = config_.inspect(images, io);
  } catch (const std::exception& e) {
    const std::string why = stopping_ ? "interrupted: the OMA is stopping" : e.what();
    job_log_.end_step(id, step, StepStatus::Failed, why);
    throw JobFailed(fmt::format("inspection of VM {} ({}) could not run: {}; the replicas were only read and the last "
                                "stored inspection stays: start it again",
                                vm.name, vm.vm_id, why),
                    VmStatus::Replicated);
  }
  if (stopping_) {
    job_log_.end_step(id, step, StepStatus::Failed, "interrupted: the OMA is stopping");
    throw JobFailed(fmt::format("inspection of VM {} ({}) interrupted: the OMA is stopping; the replicas were only "
                                "read: start it again",
                                vm.name, vm.vm_id),
                    VmStatus::Replicated);
  }
  // The VM is released (the job's return) right after this: the VMA is asked for
  // vSphere's firmware while the job still holds it, a few milliseconds.
  store(vm, id, started_by, g);
  if (g.convertible) {
    job_log_.end_step(id, step, StepStatus::Completed, guest::summary(g) + ": convertible");
  } else {
    job_log_.end_step(id, step, StepStatus::Completed, "not convertible: " + g.reason);
    job_log_.add_event(id, EventLevel::Warn,
                       fmt::format("VM {} cannot be converted for KVM: {}; a cutover or test failover that converts "
                                   "guests will refuse it before the source is powered off",
                                   vm.name, g.reason));
  }
  return VmStatus::Replicated;
}

void InspectionService::store(const VmRecord& vm, const std::string& job_id, const std::string& started_by,
                              const guest::GuestInspection& g) {
  try {
    InspectionRecord r;
    r.vm_id = vm.vm_id;
    r.job_id = job_id;
    r.started_by = started_by;
    r.os_found = g.os_found;
    r.os_family = g.os_family;
    r.distro = g.distro;
    r.version = g.version;
    r.product_name = g.product_name;
    r.osinfo = g.osinfo;
    r.root_device = g.root_device;
    r.boot_disk = g.boot_disk;
    const auto disks = vms_.list_disks(vm.vm_id);  // unit order: the inspected disks' order
    if (g.boot_disk >= 0 && static_cast<size_t>(g.boot_disk) < disks.size()) r.boot_disk_key = disks[g.boot_disk].disk_key;
    r.firmware = g.firmware;
    try {
      const protocol::DiscoveredVm d = vma_for_(vm.vm_id)->describe_vm(vm.vm_id);
      r.vsphere_firmware = d.firmware;
      r.vsphere_secure_boot = d.secure_boot;
    } catch (const std::exception& e) {
      log::warn("VM {}: vSphere's firmware setting could not be read for its inspection ({}): stored as unknown",
                vm.vm_id, e.what());
    }
    r.convertible = g.convertible;
    r.reason = g.reason;
    r.seconds = g.seconds;
    r.inspected_at = now_ms();
    results_.put(r);
  } catch (const std::exception& e) {
    log::warn("VM {}: its inspection by job {} could not be stored: {}", vm.vm_id, job_id, e.what());
    try {
      job_log_.add_event(job_id, EventLevel::Warn, fmt::format("the inspection could not be stored: {}", e.what()));
    } catch (const std::exception&) {
      // the database is what failed: the log line above says it
    }
  }
}

bool InspectionService::runs_after_pass() {
  if (!config_.conversion_enabled) return false;
  auto s = config_repo_.get_setting(kInspectionAfterPass);
  return s && !s->encrypted && s->value == "true";
}

void InspectionService::after_pass(const JobRecord& pass) {
  if (!is_pass(pass.kind) || stopping_ || !runs_after_pass()) return;
  if (pass.kind == JobKind::Incremental && results_.find(pass.vm_id)) return;  // inspected before: enough
  try {
    const VmRecord vm = vms_.get_vm(pass.vm_id);
    if (vm.current_job_id && job_log_.get_job(*vm.current_job_id).kind == JobKind::BootCheck) {
      job_log_.add_event(pass.job_id, EventLevel::Info,
                         fmt::format("the boot check {} started after this pass inspects the guest", *vm.current_job_id));
      return;
    }
    std::string id = start(pass.vm_id, "after_pass");
    job_log_.add_event(pass.job_id, EventLevel::Info,
                       fmt::format("inspection {} started after this pass (guest conversion is on)", id));
  } catch (const std::exception& e) {
    job_log_.add_event(pass.job_id, EventLevel::Warn,
                       fmt::format("no inspection after this pass (guest conversion is on): {}", e.what()));
  }
}

void InspectionService::stop() { stopping_ = true; }

}  // namespace mk::oma
