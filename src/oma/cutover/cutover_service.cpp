#include "oma/cutover/cutover_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string_view>

#include "cloudstack/cutover.h"
#include "cloudstack/preflight.h"
#include "cloudstack/test_failover.h"
#include "common/log.h"
#include "guest/conversion.h"
#include "guest/inspection.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {
namespace {

namespace cs = mk::cloudstack;
using nlohmann::json;

// ---- the OMA's collaborators of a cutover ---------------------------------------------

// The source's power, through the VMA. The VMA's "shutdown" answers once the VM is off
// (powered off by the VMA after the timeout if the guest did not shut down).
class VmaSourcePower : public cs::SourcePower {
 public:
  VmaSourcePower(VmaClient& vma, JobRepository& log, std::string job_id, int timeout_s)
      : vma_(vma), log_(log), job_id_(std::move(job_id)), timeout_s_(timeout_s) {}

  bool is_powered_on(const std::string& vm_uuid) override {
    return vma_.describe_vm(vm_uuid).power_state == protocol::PowerState::PoweredOn;
  }
  void shutdown_guest(const std::string& vm_uuid) override {
    log_.add_event(job_id_, EventLevel::Info,
                   fmt::format("asking the VMA to shut VM {} down (power off after {} s)", vm_uuid, timeout_s_));
    protocol::PowerReply r = vma_.power(vm_uuid, protocol::PowerAction::Shutdown, timeout_s_);
    log_.add_event(job_id_, r.forced ? EventLevel::Warn : EventLevel::Info,
                   r.forced ? fmt::format("the guest did not shut down within {} s: the VMA powered it off", timeout_s_)
                            : std::string("the guest shut down"));
  }
  void power_off(const std::string& vm_uuid) override { vma_.power(vm_uuid, protocol::PowerAction::Off, timeout_s_); }
  void power_on(const std::string& vm_uuid) override {
    if (is_powered_on(vm_uuid)) {  // someone powered it on during the cutover (a rollback's cause)
      log_.add_event(job_id_, EventLevel::Info, fmt::format("source VM {} is powered on already", vm_uuid));
      return;
    }
    vma_.power(vm_uuid, protocol::PowerAction::On, timeout_s_);
    log_.add_event(job_id_, EventLevel::Info, fmt::format("source VM {} powered on again", vm_uuid));
  }

 private:
  VmaClient& vma_;
  JobRepository& log_;
  std::string job_id_;
  int timeout_s_;
};

// Leftover snapshots removed, then an incremental pass on the job itself.
class JobFinalPass : public cs::FinalPass {
 public:
  JobFinalPass(VmaClient& vma, JobManager& jobs, JobRepository& log, std::string job_id)
      : vma_(vma), jobs_(jobs), log_(log), job_id_(std::move(job_id)) {}
  void run(const std::string& vm_uuid) override {
    int removed = vma_.cleanup(vm_uuid);
    if (removed)
      log_.add_event(job_id_, EventLevel::Warn, fmt::format("the VMA removed {} leftover snapshot(s)", removed));
    jobs_.replicate_pass(job_id_);
    // The pass read the source while it was off. Powered on meanwhile (in vSphere, or
    // before a restarted pass took a snapshot of it running), its newest writes may be
    // missing from the volumes, so nothing may be made final.
    if (vma_.describe_vm(vm_uuid).power_state != protocol::PowerState::PoweredOff) {
      throw Error(fmt::format("the source VM {} was powered on during the final pass: what it wrote since may be "
                              "missing from the volumes; shut it down and run the cutover again",
                              vm_uuid));
    }
  }

 private:
  VmaClient& vma_;
  JobManager& jobs_;
  JobRepository& log_;
  std::string job_id_;
};

// The exports of a VM's disks, by disk: removed from the export server (the database
// keeps the mapping, so the name never changes), re-published and verified on return.
class OmaExports : public cs::Exports {
 public:
  OmaExports(VmRepository& vms, StorageRepository& storage, ExportManager& exports)
      : vms_(vms), storage_(storage), exports_(exports) {}

  void remove(const cs::DiskRef& disk) override { exports_.backend().unpublish(export_name(disk_of(disk))); }

  void ensure(const cs::DiskRef& ref, const std::string& volume_id, const std::string& device_path) override {
    DiskRecord disk = disk_of(ref);
    auto volume = storage_.find_volume(disk.vm_id, disk.disk_key);
    if (!volume || volume->volume_id != volume_id) {
      throw Error(fmt::format("VM {} disk {}: volume {} is not the one the OMA recorded ({}); not exporting it",
                              disk.vm_id, disk.disk_key, volume_id, volume ? volume->volume_id : "none"));
    }
    volume->device_path = device_path;
    ExportRecord e = exports_.ensure_export(disk, *volume);
    exports_.verify(e, static_cast<uint64_t>(volume->size_bytes));
  }

 private:
  static std::string export_name(const DiskRecord& d) { return oma::export_name(d.vm_id, d.unit); }
  DiskRecord disk_of(const cs::DiskRef& ref) {
    for (const auto& d : vms_.list_disks(ref.vm_uuid)) {
      if (d.disk_key == ref.disk_key) return d;
    }
    throw NotFound(fmt::format("VM {} has no disk {}", ref.vm_uuid, ref.disk_key));
  }
  VmRepository& vms_;
  StorageRepository& storage_;
  ExportManager& exports_;
};

// Each step of a StepLog as a row of the job's steps; a failure also as an event.
cs::StepLog::Listener step_recorder(JobRepository& log, const std::string& job_id) {
  auto seq = std::make_shared<int64_t>(0);
  return [&log, job_id, seq](const cs::Step& s) {
    switch (s.status) {
      case cs::StepStatus::Running:
        // A node frozen past its lease whose VM was taken over (the job failed by the
        // other node, which undoes it) must not go on changing CloudStack: the step, and
        // a rollback (also a step), stop here before they touch anything.
        if (JobRecord j = log.get_job(job_id); is_terminal(j.status)) {
          *seq = -1;  // nothing of this step is recorded
          throw Error(fmt::format("job {} was ended by another OMA node ({}): this node stops before step {} and "
                                  "touches nothing",
                                  job_id, j.error.value_or(enum_name(j.status)), s.name));
        }
        *seq = log.begin_step(job_id, s.name);
        log.set_job_status(job_id, JobStatus::Running, s.name);
        break;
      case cs::StepStatus::Done:
        log.end_step(job_id, *seq, StepStatus::Completed, s.detail);
        break;
      case cs::StepStatus::Failed:
        if (*seq < 0) break;  // the step refused above: the job is another node's now
        log.end_step(job_id, *seq, StepStatus::Failed, s.detail);
        log.add_event(job_id, EventLevel::Error, fmt::format("step {} failed: {}", s.name, s.detail));
        break;
      case cs::StepStatus::Skipped:
        log.end_step(job_id, log.begin_step(job_id, s.name), StepStatus::Skipped, s.detail);
        break;
    }
  };
}

// Each step of a StepLog as a row of a job that has already ended (another node failed
// it): the steps only, never the job's status; a failure also as an event.
cs::StepLog::Listener ended_job_step_recorder(JobRepository& log, const std::string& job_id) {
  auto seq = std::make_shared<int64_t>(0);
  return [&log, job_id, seq](const cs::Step& s) {
    switch (s.status) {
      case cs::StepStatus::Running: *seq = log.begin_step(job_id, s.name); break;
      case cs::StepStatus::Done: log.end_step(job_id, *seq, StepStatus::Completed, s.detail); break;
      case cs::StepStatus::Failed:
        log.end_step(job_id, *seq, StepStatus::Failed, s.detail);
        log.add_event(job_id, EventLevel::Error, fmt::format("step {} failed: {}", s.name, s.detail));
        break;
      case cs::StepStatus::Skipped:
        log.end_step(job_id, log.begin_step(job_id, s.name), StepStatus::Skipped, s.detail);
        break;
    }
  };
}

// The record a running cutover writes ahead (vm_failovers, kind cutover, "in_progress"):
// what another node undoes if this one dies (undo_interrupted).
std::string progress_details(const cs::CutoverRecord& r, const std::string& name, VmStatus before) {
  return json{{"in_progress", true}, {"name", name}, {"deploying", r.deploying}, {"lost_deploy", r.lost_deploy},
              {"unexported", r.unexported}, {"source_was_on", r.source_was_on}, {"status_before", before},
              {"volumes_changed", r.volumes_changed}}
      .dump();
}

// What CloudStack would refuse once the job has begun (the source off, for a cutover):
// the service offering's CPU and memory ranges, and VM snapshots or a backup offering on
// the OMA's VM (its volumes could not be detached). Throws UsageError naming each.
void check_cloud(const CloudStackSession& session, const cs::SourceVm& source, const char* what) {
  std::vector<cs::TargetFinding> found = cs::check_offering(*session.client, session.target, source);
  for (auto& f : cs::check_oma_vm(*session.client, session.volumes->config().oma_vm_id)) found.push_back(std::move(f));
  std::string lines;
  for (const auto& f : found) {
    if (f.blocking) lines += "\n  - " + f.text();
  }
  if (!lines.empty()) {
    throw UsageError(fmt::format("VM {} ({}): CloudStack would refuse the {}; nothing was started and the source "
                                 "is as it was:{}",
                                 source.vm_uuid, source.name, what, lines));
  }
}

// What the CloudStack VM builder needs of an inspection.
cs::GuestFacts facts_of(const guest::GuestInspection& g) {
  cs::GuestFacts f;
  f.os_family = g.os_family;
  f.distro = g.distro;
  f.product_name = g.product_name;
  f.boot_disk = g.boot_disk;
  f.firmware = g.firmware;
  // virt-inspector's "major.minor".
  const std::size_t dot = g.version.find('.');
  try {
    f.major_version = std::stoi(g.version.substr(0, dot));
    if (dot != std::string::npos) f.minor_version = std::stoi(g.version.substr(dot + 1));
  } catch (const std::exception&) {
    // no version: the OS type falls back to a generic one
  }
  return f;
}

// vSphere's firmware and secure boot of the source, as the VMA reads them now; unknown
// (the disks decide) when the VMA is older or cannot say.
void read_firmware(VmaClient& vma, cs::SourceVm& source, JobRepository& log, const std::string& job_id) {
  try {
    const protocol::DiscoveredVm d = vma.describe_vm(source.vm_uuid);
    source.firmware = d.firmware;
    source.secure_boot = d.secure_boot;
  } catch (const std::exception& e) {
    log.add_event(job_id, EventLevel::Warn,
                  fmt::format("vSphere's firmware setting of VM {} could not be read ({}): the disks decide BIOS or "
                              "UEFI",
                              source.name, e.what()));
  }
}

std::string cutover_failed_text(const std::string& vm_id, const std::string& name) {
  return fmt::format("VM {} ({}) has a cutover whose rollback did not finish: its failed cutover job says what is left; "
                     "fix the cause, then POST /api/v1/vms/{}/cutover/rollback",
                     vm_id, name, vm_id);
}

VmRecord claimable_vm(VmRepository& vms, const std::string& vm_id, const char* what) {
  check_uuid(vm_id, "vm_id");
  VmRecord vm = vms.get_vm(vm_id);
  if (vm.status == VmStatus::CutOver)
    throw Conflict(fmt::format("VM {} ({}) has already been cut over", vm_id, vm.name));
  if (vm.status == VmStatus::TestFailover) {
    throw Conflict(fmt::format("VM {} ({}) is in a test failover: clean it up before a {}", vm_id, vm.name, what));
  }
  if (vm.status == VmStatus::CutoverFailed) throw Conflict(cutover_failed_text(vm_id, vm.name));
  return vm;
}

// The VM's status before a failover, as its stored record says (`what` names the record).
VmStatus stored_status_before(const json& details, const std::string& vm_id, const char* what) {
  return parse_enum<VmStatus>(details.value("status_before", enum_name(VmStatus::Replicated)),
                              fmt::format("VM {}: the stored {} record's status_before", vm_id, what));
}

// What an incomplete cutover rollback left, as the OMA keeps it (vm_failovers, kind
// cutover, with "rollback_incomplete"), for the rollback job that finishes it.
std::string record_details(const cs::CutoverRecord& r, const std::string& name, VmStatus before) {
  return json{{"rollback_incomplete", true}, {"name", name}, {"lost_deploy", r.lost_deploy},
              {"unexported", r.unexported}, {"source_was_on", r.source_was_on}, {"status_before", before}}
      .dump();
}

// The VM's volumes may differ from what its final pass left (cs::CutoverRecord::
// volumes_changed): an incremental pass from the committed change IDs would keep those
// writes beside the source's, so the change IDs are forgotten and the next pass is full.
void require_full_pass(VmRepository& vms, JobRepository& job_log, const std::string& vm_id,
                       const std::string& job_id, const std::string& why) {
  vms.forget_change_ids(vm_id);
  job_log.add_event(job_id, EventLevel::Warn,
                    fmt::format("VM {}: {}; its next pass copies every disk in full (run a full replication before "
                                "another cutover)",
                                vm_id, why));
}

// The VM's status after a job that changed nothing: as before the job, unless that
// was itself the status of an earlier interrupted start.
VmStatus failed_status(const VmRecord& before) {
  bool starting = before.status == VmStatus::CuttingOver || before.status == VmStatus::TestFailoverStarting;
  return starting ? VmStatus::Replicated : before.status;
}

// The guest's conversion on a CloudStack VM's volumes, as block devices on the OMA's VM
// (convert_volumes: through overlays, committed only on success).
class VolumeConversion : public cs::GuestConversion {
 public:
  using Convert = std::function<guest::ConversionResult(const std::vector<guest::DiskImage>&)>;
  explicit VolumeConversion(Convert convert) : convert_(std::move(convert)) {}
  std::string convert(const cs::SourceVm& vm, const std::vector<std::string>& devices) override {
    std::vector<guest::DiskImage> images;
    for (const auto& d : devices) images.push_back({d, "raw"});
    const guest::ConversionResult r = convert_(images);
    if (!r.ok && r.volumes_changed) throw cs::ConversionChangedVolumes(r.error);
    if (!r.ok) throw Error(r.error + "; the volumes are as the final pass left them");
    return fmt::format("VM {}: converted in {:.0f} s, committed into {} volumes in {:.0f} s", vm.name, r.seconds,
                       devices.size(), r.commit_seconds);
  }

 private:
  Convert convert_;
};

}  // namespace

CutoverService::CutoverService(VmRepository& vms, JobRepository& job_log, StorageRepository& storage, JobManager& jobs,
                               ExportManager& exports, VmaForVm vma_for, CloudStackTarget& target,
                               bool cloudstack_backend, CutoverConfig config)
    : vms_(vms), job_log_(job_log), storage_(storage), jobs_(jobs), exports_(exports), vma_for_(std::move(vma_for)),
      target_(target), cloudstack_(cloudstack_backend), config_(config) {}

std::string CutoverService::start_cutover(const std::string& vm_id, int timeout_s) {
  VmRecord vm = claimable_vm(vms_, vm_id, "cutover");
  if (timeout_s < 1 || timeout_s > 86400) throw UsageError("shutdown_timeout_seconds: must be between 1 and 86400");
  if (!cloudstack_) return start_local_cutover(vm, timeout_s);
  auto session = target_.session();
  cs::SourceVm source = cloudstack_source_vm(vms_, storage_, vm, true);
  cs::VmBuilder(*session->client, *session->volumes, session->target).check(source);  // nothing changed yet
  check_cloud(*session, source, "cutover");
  VmStatus before = failed_status(vm);
  return jobs_.start_custom(vm_id, JobKind::Cutover, true, [=, this](const JobRecord& job) -> VmStatus {
    vms_.set_vm_status(vm_id, VmStatus::CuttingOver);
    cs::VmBuilder builder(*session->client, *session->volumes, session->target);
    auto vma = vma_for_(vm_id);
    VmaSourcePower power(*vma, job_log_, job.job_id, timeout_s);
    JobFinalPass pass(*vma, jobs_, job_log_, job.job_id);
    OmaExports exports(vms_, storage_, exports_);
    cs::StepLog steps(step_recorder(job_log_, job.job_id));
    // The VMA's shutdown answers once the VM is off; the margin covers its answer.
    cs::CutoverOptions options{std::chrono::seconds(timeout_s + 60), config_.power_poll};
    // Written ahead: if this node dies, the node that takes the VM over undoes from it.
    options.record_changed = [&](const cs::CutoverRecord& r) {
      vms_.put_failover({vm_id, FailoverKind::Cutover, job.job_id, r.vm_id, progress_details(r, source.name, before),
                         now_ms()});
    };
    std::string target_vm;
    cs::CutoverRecord record;
    cs::SourceVm fitted = source;
    const std::unique_ptr<cs::GuestConversion> conversion =
        prepare_guest(vm, *session, *vma, fitted, steps, "cutover", before, job.job_id);
    auto forget_progress = [&] {
      try {
        vms_.delete_failover(vm_id, FailoverKind::Cutover);
      } catch (const std::exception& e) {
        log::warn("VM {}: the record of its rolled-back cutover stays ({})", vm_id, e.what());
      }
    };
    try {
      target_vm = cs::Cutover(builder, power, pass, exports, options, conversion.get()).run(fitted, steps, record);
    } catch (const cs::CutoverError& e) {
      if (record.volumes_changed) {
        require_full_pass(vms_, job_log_, vm_id, job.job_id,
                          "the cutover failed after the guest conversion wrote its volumes");
      }
      const cs::Step* rb = steps.find("rollback");
      if (rb && rb->status == cs::StepStatus::Done) {
        forget_progress();
        throw JobFailed(e.what(), before);
      }
      // What is left stays recorded; the VM is held (no pass, cutover or test failover)
      // until the rollback job finishes it.
      vms_.put_failover({vm_id, FailoverKind::Cutover, job.job_id, record.vm_id,
                         record_details(record, source.name, before), now_ms()});
      throw JobFailed(fmt::format("{} (the rollback: POST /api/v1/vms/{}/cutover/rollback)", e.what(), vm_id),
                      VmStatus::CutoverFailed);
    } catch (const std::exception& e) {
      forget_progress();  // refused before any step (UsageError): nothing changed
      throw JobFailed(e.what(), before);
    }
    vms_.put_failover({vm_id, FailoverKind::Cutover, job.job_id, target_vm,
                         json{{"name", source.name}, {"zone_id", session->target.zone_id}}.dump(), now_ms()});
    job_log_.add_event(job.job_id, EventLevel::Info,
                       fmt::format("VM {} runs in CloudStack as {}", source.name, target_vm));
    if (config_.volumes_left_oma) {
      try {
        config_.volumes_left_oma(vm_id);
      } catch (const std::exception& e) {
        log::warn("VM {}: cut over, but its volume slots on this OMA were not released ({}); they are counted "
                  "as used until the VM is released",
                  vm_id, e.what());
      }
    }
    return VmStatus::CutOver;
  });
}

std::string CutoverService::start_cutover_rollback(const std::string& vm_id) {
  check_uuid(vm_id, "vm_id");
  VmRecord vm = vms_.get_vm(vm_id);
  auto found = vms_.find_failover(vm_id, FailoverKind::Cutover);
  json details = found ? json::parse(found->details, nullptr, false) : json();
  // cutover_interrupted too: the OMA restarted during an earlier run of this rollback.
  bool held = vm.status == VmStatus::CutoverFailed || vm.status == VmStatus::CutoverInterrupted;
  if (!held || !details.is_object() || !details.value("rollback_incomplete", false)) {
    throw Conflict(fmt::format("VM {} ({}) has no cutover whose rollback is incomplete (status {})", vm_id, vm.name,
                               enum_name(vm.status)));
  }
  cs::CutoverRecord record;
  record.vm_id = found->target_vm_id;
  record.lost_deploy = details.value("lost_deploy", "");
  record.unexported = details.value("unexported", std::vector<std::string>{});
  record.source_was_on = details.value("source_was_on", false);
  VmStatus after = stored_status_before(details, vm_id, "cutover");
  auto session = target_.session();
  cs::SourceVm source = cloudstack_source_vm(vms_, storage_, vm, true);
  return jobs_.start_custom(vm_id, JobKind::Cutover, false, [=, this](const JobRecord& job) -> VmStatus {
    cs::VmBuilder builder(*session->client, *session->volumes, session->target);
    auto vma = vma_for_(vm_id);
    VmaSourcePower power(*vma, job_log_, job.job_id, 60);
    JobFinalPass no_pass(*vma, jobs_, job_log_, job.job_id);  // not run: a rollback makes no pass
    OmaExports exports(vms_, storage_, exports_);
    cs::StepLog steps(step_recorder(job_log_, job.job_id));
    job_log_.add_event(job.job_id, EventLevel::Info,
                       fmt::format("finishing the rollback of the cutover of VM {} (job {})", vm.name, found->job_id));
    try {
      cs::Cutover(builder, power, no_pass, exports).finish_rollback(source, record, steps);
    } catch (const std::exception& e) {
      throw JobFailed(fmt::format("{} (the rollback: POST /api/v1/vms/{}/cutover/rollback)", e.what(), vm_id),
                      VmStatus::CutoverFailed);
    }
    vms_.delete_failover(vm_id, FailoverKind::Cutover);
    job_log_.add_event(job.job_id, EventLevel::Info,
                       "cutover rolled back: the volumes are on the OMA again and the source as it was");
    return after;
  });
}

std::string CutoverService::start_local_cutover(const VmRecord& vm, int timeout_s) {
  VmStatus before = failed_status(vm);
  std::string vm_id = vm.vm_id;
  return jobs_.start_custom(vm_id, JobKind::Cutover, true, [=, this](const JobRecord& job) -> VmStatus {
    vms_.set_vm_status(vm_id, VmStatus::CuttingOver);
    auto vma = vma_for_(vm_id);
    VmaSourcePower power(*vma, job_log_, job.job_id, timeout_s);
    JobFinalPass pass(*vma, jobs_, job_log_, job.job_id);
    cs::StepLog steps(step_recorder(job_log_, job.job_id));
    bool powered_off = false;
    std::vector<guest::DiskImage> volumes;
    guest::GuestInspection inspected;
    if (config_.convert_guests) {
      try {
        volumes = local_volume_images(vm_id);
      } catch (const std::exception& e) {
        throw JobFailed(fmt::format("cutover of VM {} ({}) refused: {}; the source was not touched", vm.name, vm_id,
                                    e.what()), before);
      }
      inspected = inspect_step(vm, volumes, steps, "cutover", before, job.job_id);
    }
    try {
      steps.begin("final-pass");
      if (power.is_powered_on(vm_id)) {
        power.shutdown_guest(vm_id);
        powered_off = true;
      }
      pass.run(vm_id);
      steps.done(powered_off ? "source powered off by this cutover" : "source was already off");
      if (config_.convert_guests) convert_local_guest(vm, volumes, inspected, job.job_id, steps);
      steps.begin("mark-cut-over");
      steps.done("the local volumes are the migrated disks");
    } catch (const std::exception& e) {
      steps.failed(e.what());
      std::string rollback = "nothing to undo";
      if (powered_off) {
        steps.begin("rollback");
        try {
          power.power_on(vm_id);
          steps.done("source powered on again");
          rollback = "rolled back: the source is powered on again";
        } catch (const std::exception& again) {
          steps.failed(again.what());
          throw JobFailed(fmt::format("cutover of VM {} ({}) failed: {}; ROLLBACK INCOMPLETE: powering the source on "
                                      "again failed: {}",
                                      vm.name, vm_id, e.what(), again.what()),
                          VmStatus::CutoverFailed);
        }
      }
      throw JobFailed(fmt::format("cutover of VM {} ({}) failed: {}; {}", vm.name, vm_id, e.what(), rollback), before);
    }
    return VmStatus::CutOver;
  });
}

std::vector<guest::DiskImage> CutoverService::local_volume_images(const std::string& vm_id) {
  std::vector<guest::DiskImage> images;
  for (const DiskRecord& d : vms_.list_disks(vm_id)) {  // unit order
    auto volume = storage_.find_volume(vm_id, d.disk_key);
    if (!volume) {
      throw UsageError(fmt::format("disk {} (unit {}) of VM {} has no volume: replicate it first", d.disk_key, d.unit,
                                   vm_id));
    }
    images.push_back({volume->device_path, "raw"});
  }
  if (images.empty()) throw UsageError(fmt::format("VM {} has no disks", vm_id));
  return images;
}

guest::GuestInspection CutoverService::inspect_step(const VmRecord& vm, const std::vector<guest::DiskImage>& volumes,
                                                    cloudstack::StepLog& steps, const char* what, VmStatus before,
                                                    const std::string& job_id) {
  steps.begin("guest-inspection");
  guest::GuestInspection inspected;
  try {
    inspected = config_.inspector ? config_.inspector(volumes) : guest::inspect_guest(volumes);
  } catch (const std::exception& e) {
    steps.failed(e.what());
    throw JobFailed(fmt::format("{} of VM {} ({}) refused: inspecting its volumes failed: {}; the source was not "
                                "touched",
                                what, vm.name, vm.vm_id, e.what()),
                    before);
  }
  if (config_.inspected) {
    config_.inspected(vm, job_id, std::string_view(what) == "cutover" ? "cutover" : "test_failover", inspected);
  }
  if (!inspected.convertible) {
    steps.failed(inspected.reason);
    throw JobFailed(fmt::format("{} of VM {} ({}) refused: {}; the source was not touched", what, vm.name, vm.vm_id,
                                inspected.reason),
                    before);
  }
  steps.done(guest::summary(inspected));
  return inspected;
}

std::unique_ptr<cs::GuestConversion> CutoverService::prepare_guest(const VmRecord& vm, const CloudStackSession& session,
                                                                  VmaClient& vma, cs::SourceVm& source,
                                                                  cs::StepLog& steps, const char* what, VmStatus before,
                                                                  const std::string& job_id) {
  std::unique_ptr<cs::GuestConversion> conversion;
  if (config_.convert_guests) {
    // Before the source is powered off: a guest that cannot be converted refuses the job
    // while nothing has changed.
    const guest::GuestInspection inspected =
        inspect_step(vm, cloudstack_volume_images(session, source), steps, what, before, job_id);
    source.guest = facts_of(inspected);
    conversion = std::make_unique<VolumeConversion>(
        [this, vm, inspected, job_id](const std::vector<guest::DiskImage>& images) {
          return run_conversion(vm, images, inspected, job_id);
        });
  }
  read_firmware(vma, source, job_log_, job_id);
  return conversion;
}

std::vector<guest::DiskImage> CutoverService::cloudstack_volume_images(const CloudStackSession& session,
                                                                       const cloudstack::SourceVm& source) {
  std::vector<guest::DiskImage> images;
  for (const auto& d : cs::unit_order(source)) {
    images.push_back({session.volumes->wait_for_device(d.volume_id, d.disk), "raw"});
  }
  if (images.empty()) throw UsageError(fmt::format("VM {} has no disks", source.vm_uuid));
  return images;
}

guest::ConversionResult CutoverService::run_conversion(const VmRecord& vm, const std::vector<guest::DiskImage>& volumes,
                                                       const guest::GuestInspection& inspected,
                                                       const std::string& job_id) {
  guest::ConversionOptions options;
  options.name = vm.name;
  options.firmware = inspected.firmware;
  options.timeout = config_.conversion_timeout;
  if (!config_.conversion_log_dir.empty()) {
    std::error_code ec;  // a missing log directory must not fail the cutover: run_tool then reports
    std::filesystem::create_directories(config_.conversion_log_dir, ec);
    options.log_path = fmt::format("{}/convert-{}.log", config_.conversion_log_dir, job_id);
  }
  job_log_.add_event(job_id, EventLevel::Info,
                     fmt::format("converting VM {} for KVM with virt-v2v-in-place ({} disks)", vm.name, volumes.size()));
  if (config_.converter) return config_.converter(volumes, options);
  return guest::convert_volumes(volumes, options);
}

void CutoverService::convert_local_guest(const VmRecord& vm, const std::vector<guest::DiskImage>& volumes,
                                         const guest::GuestInspection& inspected, const std::string& job_id,
                                         cloudstack::StepLog& steps) {
  steps.begin("guest-conversion");
  const guest::ConversionResult r = run_conversion(vm, volumes, inspected, job_id);
  if (!r.ok && r.volumes_changed) {
    require_full_pass(vms_, job_log_, vm.vm_id, job_id, "a failed guest conversion could not put every volume back");
    throw Error(r.error);
  }
  if (!r.ok) throw Error(r.error + "; the volumes are as the final pass left them");
  steps.done(fmt::format("converted in {:.0f} s, committed into {} volumes in {:.0f} s", r.seconds, volumes.size(),
                         r.commit_seconds));
}

std::string CutoverService::start_test_failover(const std::string& vm_id) {
  VmRecord vm = claimable_vm(vms_, vm_id, "test failover");
  if (!cloudstack_) throw UsageError("test failover needs the cloudstack volume backend (oma --volume-backend cloudstack)");
  auto session = target_.session();
  if (session->test_network_id.empty()) {
    throw UsageError("no test network is set: set test_network_id in the CloudStack settings first");
  }
  cs::SourceVm source = cloudstack_source_vm(vms_, storage_, vm, true);
  cs::VmBuilder(*session->client, *session->volumes, session->target).check(source);
  check_cloud(*session, source, "test failover");
  for (const auto& d : vms_.list_disks(vm_id)) {
    if (!d.change_id) {
      throw UsageError(fmt::format("VM {} disk {} has not been replicated yet: run a full replication first", vm_id,
                                   d.disk_key));
    }
  }
  VmStatus before = failed_status(vm);
  return jobs_.start_custom(vm_id, JobKind::TestFailover, false, [=, this](const JobRecord& job) -> VmStatus {
    vms_.set_vm_status(vm_id, VmStatus::TestFailoverStarting);
    cs::VmBuilder builder(*session->client, *session->volumes, session->target);
    OmaExports exports(vms_, storage_, exports_);
    cs::StepLog steps(step_recorder(job_log_, job.job_id));
    cs::SourceVm fitted = source;
    const std::unique_ptr<cs::GuestConversion> conversion =
        prepare_guest(vm, *session, *vma_for_(vm_id), fitted, steps, "test failover", before, job.job_id);
    cs::TestFailover tf(*session->client, builder, exports, session->test_network_id, conversion.get());
    cs::TestFailoverRecord record;
    auto write_record = [&, vm_id, before](const cs::TestFailoverRecord& r, bool in_progress) {
      json snapshots = json::object();
      for (const auto& [volume, snapshot] : r.snapshots) snapshots[volume] = snapshot;
      json details{{"vm_name", r.vm_name}, {"snapshots", snapshots}, {"unexported", r.unexported},
                   {"status_before", before}, {"conversion_began", r.conversion_began}};
      if (in_progress) details["in_progress"] = true;
      vms_.put_failover({vm_id, FailoverKind::TestFailover, job.job_id, r.vm_id, details.dump(), now_ms()});
    };
    auto keep_record = [&] { write_record(record, false); };
    // Written ahead: if this node dies, the node that takes the VM over undoes from it.
    tf.on_record_change([&](const cs::TestFailoverRecord& r) { write_record(r, true); });
    try {
      tf.start(fitted, steps, record);
    } catch (const std::exception& e) {
      bool rolled_back = true;
      for (const auto& st : steps.steps()) {
        if (st.name.rfind("rollback-", 0) == 0 && st.status == cs::StepStatus::Failed) rolled_back = false;
      }
      if (rolled_back) {
        try {
          vms_.delete_failover(vm_id, FailoverKind::TestFailover);
        } catch (const std::exception& again) {
          log::warn("VM {}: the record of its rolled-back test failover stays ({})", vm_id, again.what());
        }
        throw JobFailed(e.what(), before);
      }
      // What is left must stay findable: the cleanup (POST .../test-failover/cleanup)
      // finishes what the rollback could not.
      keep_record();
      throw JobFailed(std::string(e.what()) + "; run the test failover cleanup once the cause is fixed",
                      VmStatus::TestFailover);
    }
    keep_record();
    job_log_.add_event(job.job_id, EventLevel::Info,
                     fmt::format("test VM {} ({}) runs on the test network; the source keeps running", record.vm_name,
                                 record.vm_id));
    return VmStatus::TestFailover;
  });
}

std::string CutoverService::start_test_failover_cleanup(const std::string& vm_id) {
  check_uuid(vm_id, "vm_id");
  VmRecord vm = vms_.get_vm(vm_id);
  if (!cloudstack_) throw UsageError("test failover needs the cloudstack volume backend (oma --volume-backend cloudstack)");
  auto found = vms_.find_failover(vm_id, FailoverKind::TestFailover);
  if (!found) throw Conflict(fmt::format("VM {} ({}) has no test failover to clean up", vm_id, vm.name));
  json details = json::parse(found->details, nullptr, false);
  if (!details.is_object()) throw Error(fmt::format("VM {}: the stored test failover record is unreadable", vm_id));
  cs::TestFailoverRecord record;
  record.vm_id = found->target_vm_id;
  record.vm_name = details.value("vm_name", "");
  const json snapshots = details.value("snapshots", json::object());
  for (const auto& [volume, snapshot] : snapshots.items()) record.snapshots[volume] = snapshot.get<std::string>();
  record.unexported = details.value("unexported", std::vector<std::string>{});
  record.conversion_began = details.value("conversion_began", false);
  VmStatus after = stored_status_before(details, vm_id, "test failover");
  auto session = target_.session();
  cs::SourceVm source = cloudstack_source_vm(vms_, storage_, vm, true);
  return jobs_.start_custom(vm_id, JobKind::TestFailoverCleanup, false, [=, this](const JobRecord& job) -> VmStatus {
    cs::VmBuilder builder(*session->client, *session->volumes, session->target);
    OmaExports exports(vms_, storage_, exports_);
    cs::StepLog steps(step_recorder(job_log_, job.job_id));
    cs::TestFailover tf(*session->client, builder, exports, session->test_network_id.empty()
                                                                 ? std::string("none")
                                                                 : session->test_network_id);
    try {
      tf.cleanup(source, record, steps);
    } catch (const std::exception& e) {
      throw JobFailed(e.what(), VmStatus::TestFailover);  // still in test failover: run the cleanup again
    }
    vms_.delete_failover(vm_id, FailoverKind::TestFailover);
    job_log_.add_event(job.job_id, EventLevel::Info,
                       "test VM removed, volumes reverted and back on the OMA: replication continues");
    return after;
  });
}

// ---- a job of another node that died: undone here (NodeFailover) ----------------------

namespace {

// What the claim set while a dead node's cutover or test failover is undone here, and
// which record tells what to undo.
FailoverKind failover_kind_of(JobKind kind) {
  return kind == JobKind::Cutover ? FailoverKind::Cutover : FailoverKind::TestFailover;
}

}  // namespace

VmStatus CutoverService::held_status(JobKind kind) {
  return kind == JobKind::Cutover ? VmStatus::CutoverFailed : VmStatus::TestFailover;
}

std::string CutoverService::undo_interrupted(const std::string& vm_id, const JobRecord& job) {
  if (!cloudstack_) return "local volumes: nothing in CloudStack to undo";
  auto found = vms_.find_failover(vm_id, failover_kind_of(job.kind));
  if (!found || found->job_id.empty()) {
    return fmt::format("the {} recorded no change in CloudStack: nothing to undo there", job.kind);
  }
  json details = json::parse(found->details, nullptr, false);
  if (!details.is_object())
    throw Error(fmt::format("VM {}: the stored {} record is unreadable: undo it by hand", vm_id, job.kind));
  VmRecord vm = vms_.get_vm(vm_id);
  auto session = target_.session();
  cs::SourceVm source = cloudstack_source_vm(vms_, storage_, vm, true);
  cs::VmBuilder builder(*session->client, *session->volumes, session->target);
  cs::StepLog steps(ended_job_step_recorder(job_log_, job.job_id));
  if (job.kind == JobKind::Cutover) {
    // A VM already started may have booted the guest, which then wrote to the volumes:
    // tearing it down and replicating on would mix those writes into the replicas (the
    // next pass rewrites only what changed at the source). Not touched: an operator
    // decides whether the cutover is done.
    // Once an operator has destroyed that VM (as the error says), the takeover goes on.
    auto built_vm_gone = [&] {
      if (found->target_vm_id.empty()) return false;  // which VM is unknown: not guessed
      cs::Json vm_row = cs::json_first(
          session->client->call("listVirtualMachines", {{"id", found->target_vm_id}, {"listall", "true"}}),
          "virtualmachine");
      std::string state = vm_row.is_null() ? "" : cs::json_text(vm_row, "state");
      return vm_row.is_null() || state == "Destroyed" || state == "Expunging";
    };
    for (const auto& step : job_log_.list_steps(found->job_id)) {
      if (step.name != "start-vm" || built_vm_gone()) continue;
      throw Error(fmt::format("the cutover of VM {} ({}) had started CloudStack VM {} when its node died: its guest "
                              "may have written to the volumes, so they are not rolled back; if that VM runs as the "
                              "migrated VM, the cutover is done in CloudStack: keep it and do not replicate this VM "
                              "again; otherwise detach our volumes from it and destroy it: the takeover then goes on "
                              "by itself",
                              vm.name, vm_id, found->target_vm_id.empty() ? "?" : found->target_vm_id));
    }
    std::string built = found->target_vm_id;
    std::string deploying = details.value("deploying", "");
    if (deploying.empty()) deploying = details.value("lost_deploy", "");
    steps.begin("takeover-rollback");
    try {
      if (built.empty() && !deploying.empty()) {
        // The deploy may have made the VM without its answer reaching the dead node.
        cs::DeployRequest made;
        made.name = deploying;
        made.display_name = details.value("name", vm.name);
        built = builder.find_deployed(made);
      }
      std::string note = built.empty() ? "no CloudStack VM was built" : builder.tear_down(built, source);
      if (!built.empty() && note.empty()) note = fmt::format("CloudStack VM {} torn down, our volumes detached", built);
      steps.done(note);
      return note;
    } catch (const std::exception& e) {
      steps.failed(e.what());
      throw;
    }
  }
  cs::TestFailoverRecord record;
  record.vm_id = found->target_vm_id;
  record.vm_name = details.value("vm_name", "");
  const json snapshots = details.value("snapshots", json::object());  // kept: items() must not outlive it
  for (const auto& [volume, snapshot] : snapshots.items()) record.snapshots[volume] = snapshot.get<std::string>();
  record.unexported = details.value("unexported", std::vector<std::string>{});
  record.conversion_began = details.value("conversion_began", false);
  OmaExports unused(vms_, storage_, exports_);  // the volumes stay where the undo leaves them
  cs::TestFailover tf(*session->client, builder, unused,
                      session->test_network_id.empty() ? std::string("none") : session->test_network_id);
  tf.undo_in_cloud(source, record, steps);
  return "test VM removed, volumes reverted to their snapshots and the snapshots deleted";
}

void CutoverService::finish_interrupted(const std::string& vm_id, const JobRecord& job, const std::string& node_id) {
  FailoverKind kind = failover_kind_of(job.kind);
  auto found = vms_.find_failover(vm_id, kind);
  json details = found ? json::parse(found->details, nullptr, false) : json::object();
  if (!details.is_object()) details = json::object();
  VmRecord vm = vms_.get_vm(vm_id);
  if (vm.status != held_status(job.kind)) return;  // done before (a crash after it, before the step was recorded)
  std::string power = "the source was not powered off by it";
  if (kind == FailoverKind::Cutover && details.value("source_was_on", false)) {
    // Where the cutover's rollback does it: once the volumes are back on an OMA.
    auto vma = vma_for_(vm_id);
    VmaSourcePower source(*vma, job_log_, job.job_id, 60);
    if (!source.is_powered_on(vm_id)) {
      source.power_on(vm_id);
      power = "the source VM powered on again";
    } else {
      power = "the source VM is powered on";
    }
  }
  if (kind == FailoverKind::Cutover && details.value("volumes_changed", false)) {
    require_full_pass(vms_, job_log_, vm_id, job.job_id,
                      fmt::format("node {} found its cutover interrupted after the guest conversion began writing its "
                                  "volumes",
                                  node_id));
  }
  VmStatus after = stored_status_before(details, vm_id, "interrupted job's");
  if (after == VmStatus::CuttingOver || after == VmStatus::TestFailoverStarting) after = VmStatus::Replicated;
  if (found) vms_.delete_failover(vm_id, kind);
  vms_.set_vm_status(vm_id, after);
  job_log_.add_event(job.job_id, EventLevel::Info,
                     fmt::format("node {} undid this {}: what it built in CloudStack is gone, the volumes are "
                                 "attached to node {} and exported there, {}; VM {} is {} again (start the {} "
                                 "again when ready: it makes a new final pass)",
                                 node_id, job.kind, node_id, power, vm.name, enum_name(after), job.kind));
}

}  // namespace mk::oma
