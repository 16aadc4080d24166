// InspectionService: what is installed on each VM's replicas, known long before the
// change window, as OMA jobs of kind "inspection" and as each VM's last inspection.
//
// An inspection runs virt-inspector over the VM's volumes (the replicas, found as a boot
// check finds them) opened read-only (src/guest/inspection.h): OS family, distro and
// version, root device, the disk that holds it, the firmware the disks show, and whether
// virt-v2v can convert the guest, and if not, why. The replicas are never written.
//
// start() refuses, before anything runs, a VM that is unknown (NotFound) or that cannot
// be inspected now (Conflict, saying why): as a boot check, a disk without a replica or a
// committed change ID, a VM whose last pass did not complete or that was cut over, a VM
// with an active job. The job then holds the VM like a pass, for the inspection only
// (about 20 s under TCG), so no pass writes the replicas under virt-inspector; the VM's
// status is inspecting meanwhile and replicated again afterwards, whatever the outcome.
// Step "guest-inspection". The job completes when virt-inspector answered, convertible
// or not (the answer is stored; a non-convertible guest is a warning event); it fails
// when the tool could not run, and then nothing is stored.
//
// store() records every inspection of a VM, whoever ran it: this service's jobs, a boot
// check's, a cutover's and a test failover's (their configs' `inspected` hooks, set by
// the OMA). It adds the boot disk's key and vSphere's firmware setting of the source (as
// the VM's VMA describes it now; unknown when it cannot say).
//
// after_pass() is JobOptions::pass_completed: when guest conversion is on (oma
// --convert-guests) and the setting inspection.after_pass is "true", it inspects a
// VM after its full passes, and after an incremental pass only if the VM has no stored
// inspection yet; a VM that cannot be inspected then (a boot check just started after
// the same pass inspects it anyway) is an event of the pass, not an error.
//
// stop() raises the cancel flag every running inspection watches (virt-inspector is
// stopped by PID); call it before JobManager::shutdown(). An inspection found active at
// the OMA's start fails (JobManager::end_interrupted): it wrote nothing.
//
// Does not own its collaborators. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "guest/inspection.h"
#include "oma/cutover/cutover_service.h"
#include "oma/db/config_repository.h"
#include "oma/db/inspection_repository.h"
#include "oma/db/job_repository.h"
#include "oma/db/storage_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/jobs/job_manager.h"

namespace mk::oma {

// The OMA setting (PUT /api/v1/settings/inspection.after_pass): "true" or "false"; off
// when unset (the inspection holds the VM for its ~20 s: a pass or cutover started
// right after a pass would be refused meanwhile), and only when guest conversion is on.
inline constexpr const char* kInspectionAfterPass = "inspection.after_pass";

struct InspectionConfig {
  std::chrono::seconds timeout{600};
  // Guest conversion at cutover (oma --convert-guests): the automatic inspection runs
  // only then (a guest that will not be converted need not be convertible).
  bool conversion_enabled = false;
  // Tests only: instead of guest::inspect_guest. Unset: the real one.
  std::function<guest::GuestInspection(const std::vector<guest::DiskImage>&, const guest::InspectOptions&)> inspect;
};

class InspectionService {
 public:
  InspectionService(VmRepository& vms, JobRepository& job_log, StorageRepository& storage,
                    InspectionRepository& results, ConfigRepository& config, JobManager& jobs, VmaForVm vma_for,
                    InspectionConfig options);

  // Starts an inspection of the VM; returns its job's id. `started_by`: "api" or
  // "after_pass". Throws NotFound, Conflict (see the top) or mk::Error when the OMA is
  // stopping.
  std::string start(const std::string& vm_id, const std::string& started_by = "api");
  // Stores `g` as the VM's last inspection, made by job `job_id` (see the top). What
  // cannot be stored is logged, never thrown: the job that inspected goes on.
  void store(const VmRecord& vm, const std::string& job_id, const std::string& started_by,
             const guest::GuestInspection& g);
  // JobOptions::pass_completed (see the top).
  void after_pass(const JobRecord& pass);
  // Whether passes start inspections (conversion on, inspection.after_pass "true").
  bool runs_after_pass();
  // Cancels every running inspection; none starts afterwards.
  void stop();

 private:
  VmStatus run(const JobRecord& job, const VmRecord& vm, const std::vector<guest::DiskImage>& images,
               const std::string& started_by);

  VmRepository& vms_;
  JobRepository& job_log_;  // steps, events, phase
  StorageRepository& storage_;
  InspectionRepository& results_;
  ConfigRepository& config_repo_;
  JobManager& jobs_;
  VmaForVm vma_for_;
  InspectionConfig config_;
  std::atomic<bool> stopping_{false};  // every running inspection's cancel flag
};

// The replicas of a VM that a job holding it may read now (a boot check, an inspection:
// `what` names it in messages), as guest tools read them: raw, in unit order. Conflict,
// saying why and what to do, for a VM cut over, with an active job, with a disk without
// a replica or a committed change ID, or whose last pass did not complete.
std::vector<guest::DiskImage> readable_replicas(VmRepository& vms, StorageRepository& storage, const VmRecord& vm,
                                                const char* what);

}  // namespace mk::oma
