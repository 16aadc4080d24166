// CutoverService: cutover (live failover), test failover and its cleanup as OMA jobs.
//
// Each runs as a job of the JobManager (kinds "cutover", "test_failover",
// "test_failover_cleanup"): it holds the VM like a replication does (one active job
// per VM), and every step of src/cloudstack's Cutover / TestFailover is written to the
// job's steps (job_steps) as it runs, a failed step with CloudStack's error also as an
// event, so GET /api/v1/jobs/{id} shows where it is and what failed.
//
// The OMA's side of a cutover:
//   source power   through the VMA (POST /power: "shutdown" with the timeout, after
//                  which the VMA powers the VM off; "on" when a rollback must undo it);
//                  the power state is read from the VMA (the one VM, not discovery)
//   final pass     the VMA's leftover snapshots removed (POST /cleanup), then an
//                  incremental pass of every disk through the JobManager on the
//                  cutover job itself, change IDs committed
//   exports        removed before a volume leaves the OMA; re-created (and verified
//                  over NBD) on the by-id device when it comes back
// With the "local" volume backend the local images are the final disks: a cutover is
// the final pass, then the VM is marked cut over (steps "final-pass", "mark-cut-over");
// with guest conversion on, "guest-inspection" comes first (nothing powered off yet) and
// "guest-conversion" after the final pass (a failure rolls back: source powered on, the
// volumes as the final pass left them).
// With the "cloudstack" backend and guest conversion on, a cutover and a test failover
// inspect the volumes on the OMA's VM first ("guest-inspection": a guest that cannot be
// converted refuses the job before anything changes), convert them on the OMA's VM
// (cutover: after the final pass; test failover: after the volume snapshots, so the
// cleanup's revert undoes it), and build the VM to match the inspected guest (root disk,
// boot type and mode, OS type, template: cloudstack/guest_fit.h).
// Test failover needs the "cloudstack" backend.
//
// start_*() check what can be checked before anything changes (VM known, replicated,
// CloudStack settings, network mappings, volumes ours, the service offering's CPU and
// memory ranges against the VM, no VM snapshot or backup offering on the OMA's VM:
// CloudStack would refuse them after the source is off) and throw UsageError, NotFound or
// Conflict; otherwise they return the new job's id at once. VM status afterwards:
// cut_over, test_failover, or as before when a job rolled back. A cutover whose rollback
// could not finish leaves cutover_failed and a record of what is left (vm_failovers,
// kind cutover, "rollback_incomplete"): no pass, cutover or test failover starts on the
// VM until start_cutover_rollback() has finished the rollback. Steps, events and the
// job's phase go to the JobRepository; what a failover built to the VmRepository. Does
// not own its collaborators. Thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cloudstack/steps.h"
#include "guest/conversion.h"
#include "guest/inspection.h"
#include "guest/overlay.h"
#include "oma/cutover/cloudstack_target.h"
#include "oma/db/job_repository.h"
#include "oma/db/storage_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/exports/export_manager.h"
#include "oma/jobs/job_manager.h"
#include "oma/vma/vma_client.h"

namespace mk::oma {

struct CutoverConfig {
  std::chrono::milliseconds power_poll{std::chrono::seconds(1)};
  // Guest conversion at cutover and test failover (`oma --convert-guests`, either volume
  // backend): the volumes are inspected before the source is powered off (a guest that
  // cannot be converted refuses the cutover then) and converted with virt-v2v-in-place
  // after the final pass, through overlays committed only on success (src/guest). Logs go
  // to conversion_log_dir.
  bool convert_guests = false;
  std::chrono::seconds conversion_timeout{1800};
  std::string conversion_log_dir;  // "" = not kept
  // Tests only: replace guest::inspect_guest and guest::convert_volumes (the job's logic
  // without libguestfs and qemu: an inspection's answer, a conversion that fails). Unset
  // in the product.
  std::function<guest::GuestInspection(const std::vector<guest::DiskImage>&)> inspector;
  std::function<guest::ConversionResult(const std::vector<guest::DiskImage>&, const guest::ConversionOptions&)>
      converter;
  // Given each cutover's and test failover's inspection once virt-inspector answered,
  // convertible or not, with "cutover" or "test_failover" (the OMA stores it as the VM's
  // last inspection: InspectionService::store). Unset: not kept.
  std::function<void(const VmRecord& vm, const std::string& job_id, const std::string& started_by,
                     const guest::GuestInspection&)>
      inspected;
  // Called once a cutover to CloudStack completed: the VM's volumes left this OMA's VM
  // (attached to the new VM), so the data-volume slots they held are free. With several
  // OMA nodes the app releases the VM's placement here, which places queued VMs and
  // lets a dead node's VMs be taken over (issue 18). A failure is logged, not the job's.
  std::function<void(const std::string& vm_id)> volumes_left_oma;
};

// The VMA that serves a VM (with several paired VMAs, the one that discovered it).
using VmaForVm = std::function<std::shared_ptr<VmaClient>(const std::string& vm_id)>;

class CutoverService {
 public:
  // `cloudstack_backend`: the volumes are CloudStack volumes (else "local" files). The
  // settings in `target` may be kept either way.
  CutoverService(VmRepository& vms, JobRepository& job_log, StorageRepository& storage, JobManager& jobs,
                 ExportManager& exports, VmaForVm vma_for, CloudStackTarget& target, bool cloudstack_backend,
                 CutoverConfig config = {});

  std::string start_cutover(const std::string& vm_id, int shutdown_timeout_seconds);
  // A cutover whose rollback was incomplete (VM status cutover_failed, or
  // cutover_interrupted if the OMA restarted during an earlier try) rolled back again
  // from what it recorded (job kind "cutover", step "rollback"); on success the VM is as
  // before that cutover, else it stays cutover_failed. Conflict if there is none.
  std::string start_cutover_rollback(const std::string& vm_id);
  std::string start_test_failover(const std::string& vm_id);
  std::string start_test_failover_cleanup(const std::string& vm_id);

  CloudStackTarget& target() { return target_; }

  // Another OMA node died during the VM's cutover, cutover rollback, test failover or
  // its cleanup (`job`, already failed by the takeover's claim; nodes/node_failover.h).
  // The VM's status while it is undone: cutover_failed (a cutover's) or test_failover,
  // which hold off passes; the unfinished takeover holds off the other jobs.
  static VmStatus held_status(JobKind kind);
  // Undoes in CloudStack what the job recorded ahead of each change (vm_failovers): the
  // VM it built looked up (by its name if the deploy's answer was lost) and torn down,
  // our volumes detached from it; a test failover's test VM removed and its snapshots
  // reverted and deleted. The volumes are left detached (or on the dead node's VM) for
  // the takeover to attach here. Steps go to the failed job ("takeover-..."). Refuses
  // (Error) a cutover whose start-vm step had begun: its guest may have written to the
  // volumes. Idempotent; returns what it did.
  std::string undo_interrupted(const std::string& vm_id, const JobRecord& job);
  // Once the volumes are attached and exported here: the source powered on again if the
  // cutover found it on (checked, not assumed), the job's record removed, the VM's
  // status as before the job (replicated), an event on the job. Nothing when done before.
  void finish_interrupted(const std::string& vm_id, const JobRecord& job, const std::string& node_id);

 private:
  std::string start_local_cutover(const VmRecord& vm, int shutdown_timeout_seconds);
  // The local volumes of a VM in unit order, as guest tools read them.
  std::vector<guest::DiskImage> local_volume_images(const std::string& vm_id);
  void convert_local_guest(const VmRecord& vm, const std::vector<guest::DiskImage>& volumes,
                           const guest::GuestInspection& inspected, const std::string& job_id,
                           cloudstack::StepLog& steps);
  // Step "guest-inspection"; a guest that cannot be converted (or inspection that fails)
  // is a JobFailed leaving the VM `before`. `what`: "cutover", "test failover". The
  // answer, convertible or not, goes to config_.inspected.
  guest::GuestInspection inspect_step(const VmRecord& vm, const std::vector<guest::DiskImage>& volumes,
                                      cloudstack::StepLog& steps, const char* what, VmStatus before,
                                      const std::string& job_id);
  // With guest conversion on (config_.convert_guests): inspect_step over the VM's volumes
  // and `source` fitted to the guest found (root disk, OS, firmware); vSphere's firmware
  // read from `vma` either way. Returns the conversion a cutover or test failover runs
  // on the volumes, null without conversion.
  std::unique_ptr<cloudstack::GuestConversion> prepare_guest(const VmRecord& vm, const CloudStackSession& session,
                                                             VmaClient& vma, cloudstack::SourceVm& source,
                                                             cloudstack::StepLog& steps, const char* what,
                                                             VmStatus before, const std::string& job_id);
  // The VM's CloudStack volumes as block devices on the OMA's VM, in unit order.
  static std::vector<guest::DiskImage> cloudstack_volume_images(const CloudStackSession& session,
                                                                const cloudstack::SourceVm& source);
  guest::ConversionResult run_conversion(const VmRecord& vm, const std::vector<guest::DiskImage>& volumes,
                                         const guest::GuestInspection& inspected, const std::string& job_id);

  VmRepository& vms_;
  JobRepository& job_log_;  // steps, events, phase
  StorageRepository& storage_;
  JobManager& jobs_;
  ExportManager& exports_;
  VmaForVm vma_for_;
  CloudStackTarget& target_;
  bool cloudstack_;
  CutoverConfig config_;
};

}  // namespace mk::oma
