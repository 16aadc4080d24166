// BootCheckService: the boot proof before cutover, as OMA jobs of kind "boot_check".
//
// A boot check shows, before an operator commits to a cutover, that the VM's guest as
// replicated now boots on KVM as CloudStack attaches it: qcow2 overlays over the VM's
// volumes (the replicas, found as a cutover finds them) are converted with
// virt-v2v-in-place and booted in a throwaway qemu for at most `limit`
// (src/guest/boot_check.h). The replicas are never opened for writing. "Booted" is what
// the overlays say afterwards (the guest's journal: root mounted read-write, default
// target reached); the serial console's tail and a picture of the VGA console are kept
// as evidence for people.
//
// start() refuses, before anything runs, a VM that is unknown (NotFound) or that cannot
// be checked now (Conflict, saying why): a disk without a replica or a committed change
// ID, a VM whose last pass did not complete or that was cut over, a VM with an active job
// (a pass, a cutover, another boot check). The job then holds the VM like a pass (one
// active job per VM), so the replicas do not change under the overlays; the VM's status
// is boot_checking meanwhile and replicated again afterwards, whatever the outcome.
// Steps: "guest-inspection" (virt-inspector: boot disk, firmware, convertible), then
// "boot-check". The result is stored with the VM (BootCheckRepository) whether the guest
// booted or not; the job completes when it booted and fails with the reason otherwise.
//
// Overlays live in their own directory (config.scratch_dir), emptied when the service
// is built (the OMA's start: a check killed with the OMA leaves its overlays there; qemu
// and the tools die with it). stop() raises the cancel flag every running check watches:
// its tool or qemu is stopped by PID at once, its overlays are removed, and its job fails
// saying the OMA stopped; call it before JobManager::shutdown(), which waits for them.
//
// after_pass() is JobOptions::pass_completed: after each completed incremental pass it
// starts a boot check when the setting boot_check.after_incremental is "true" (off by
// default); a check that cannot start then is an event of the pass, not an error.
//
// Does not own its collaborators. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "guest/boot_check.h"
#include "guest/inspection.h"
#include "oma/db/boot_check_repository.h"
#include "oma/db/config_repository.h"
#include "oma/db/job_repository.h"
#include "oma/db/storage_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/jobs/job_manager.h"

namespace mk::oma {

// The OMA setting (PUT /api/v1/settings/boot_check.after_incremental): "true" or "false".
inline constexpr const char* kBootCheckAfterIncremental = "boot_check.after_incremental";

struct BootCheckConfig {
  std::chrono::seconds limit{300};               // the boot itself, after conversion
  std::chrono::seconds conversion_timeout{1800};
  std::chrono::seconds inspection_timeout{600};
  std::string scratch_dir;                       // overlays; "" = $TMPDIR (not emptied)
  std::string log_dir;                           // boot-check-{vm}.log (virt-v2v); "" = not kept
  // Whether a cutover converts the guest (oma --convert-guests): then the predicted
  // downtime includes the last boot check's conversion time.
  bool conversion_at_cutover = false;
  // Tests only: instead of guest::inspect_guest and guest::boot_check (the API's paths
  // without qemu). Unset: the real ones.
  std::function<guest::GuestInspection(const std::vector<guest::DiskImage>&, const guest::InspectOptions&)> inspect;
  std::function<guest::BootCheckResult(const std::vector<guest::DiskImage>&, const guest::BootCheckOptions&)> run;
  // Given each check's inspection once virt-inspector answered, convertible or not (the
  // OMA stores it as the VM's last inspection: InspectionService::store). Unset: not kept.
  std::function<void(const VmRecord& vm, const std::string& job_id, const guest::GuestInspection&)> inspected;
};

class BootCheckService {
 public:
  BootCheckService(VmRepository& vms, JobRepository& job_log, StorageRepository& storage,
                   BootCheckRepository& results, ConfigRepository& config, JobManager& jobs, BootCheckConfig options);

  // Starts a boot check of the VM; returns its job's id. `started_by`: "api" or
  // "after_incremental". Throws NotFound, Conflict (see the top) or mk::Error when the
  // OMA is stopping.
  std::string start(const std::string& vm_id, const std::string& started_by = "api");
  // JobOptions::pass_completed (see the top).
  void after_pass(const JobRecord& pass);
  // Whether boot_check.after_incremental is on.
  bool runs_after_incremental();
  // Cancels every running check (see the top); no check starts afterwards.
  void stop();

  bool conversion_at_cutover() const { return config_.conversion_at_cutover; }

 private:
  VmStatus run(const JobRecord& job, const VmRecord& vm, const std::vector<guest::DiskImage>& images,
               const std::string& started_by);
  VmRepository& vms_;
  JobRepository& job_log_;  // steps, events, phase
  StorageRepository& storage_;
  BootCheckRepository& results_;
  ConfigRepository& config_repo_;
  JobManager& jobs_;
  BootCheckConfig config_;
  std::atomic<bool> stopping_{false};  // every running check's cancel flag
};

// A serial console's bytes as text for people and JSON: escape sequences and control
// characters but newlines and tabs removed, invalid UTF-8 replaced by '?'.
std::string console_text(const std::string& bytes);

}  // namespace mk::oma
