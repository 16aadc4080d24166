#include "oma/jobs/job_manager.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <set>

#include "common/log.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {
namespace {

// Thrown inside a runner to unwind to its end state.
struct Cancelled {};
struct ShuttingDown {};
// The job ended while this runner ran it: another OMA node took its VM over and failed
// it (nodes/node_failover.h). The runner leaves it as it is.
struct EndedElsewhere {
  std::string status;
};

// A step in the job's log: begun on construction, ended "failed" unless done() is called.
// `changed` tells the job's observer (JobManager::notify) after each write.
class Step {
 public:
  Step(JobRepository& jobs, std::string job_id, std::function<void()> changed, const std::string& name)
      : jobs_(jobs), job_id_(std::move(job_id)), changed_(std::move(changed)), seq_(jobs.begin_step(job_id_, name)) {
    changed_();
  }
  ~Step() {
    if (!done_) {
      try {
        jobs_.end_step(job_id_, seq_, StepStatus::Failed);
        changed_();
      } catch (...) {
      }
    }
  }
  void done(const std::string& message = "") {
    jobs_.end_step(job_id_, seq_, StepStatus::Completed, message);
    done_ = true;
    changed_();
  }

 private:
  JobRepository& jobs_;
  std::string job_id_;
  std::function<void()> changed_;
  int64_t seq_;
  bool done_ = false;
};

// The VM's status when the OMA restarted during a custom job of this kind.
VmStatus interrupted_status(JobKind kind) {
  switch (kind) {
    case JobKind::Cutover: return VmStatus::CutoverInterrupted;
    case JobKind::TestFailover: return VmStatus::TestFailoverInterrupted;
    default: return VmStatus::TestFailoverCleanupInterrupted;
  }
}

}  // namespace

JobManager::JobManager(VmRepository& vms, JobRepository& jobs, VolumeManager& volumes, ExportManager& exports,
                       VmaClient& vma, JobOptions options)
    : vms_(vms), jobs_(jobs), volumes_(volumes), exports_(exports), vma_(vma), options_(std::move(options)) {}

JobManager::~JobManager() { shutdown(); }

std::vector<JobDiskRecord> JobManager::job_disk_rows(const JobRecord& job, const std::vector<DiskRecord>& disks,
                                                     bool incremental) {
  std::vector<JobDiskRecord> jd;
  for (const auto& d : disks) {
    if (incremental && !d.change_id) {
      throw UsageError(fmt::format("VM {} disk {} has no committed change ID: run a full replication first", job.vm_id,
                                   d.disk_key));
    }
    JobDiskRecord r;
    r.job_id = job.job_id;
    r.disk_key = d.disk_key;
    r.unit = d.unit;
    r.export_name = export_name(job.vm_id, d.unit);
    r.bytes_total = d.capacity_bytes;
    if (incremental) r.change_id_base = d.change_id;
    jd.push_back(std::move(r));
  }
  return jd;
}

std::string JobManager::start(const std::string& vm_id, JobKind kind) {
  check_uuid(vm_id, "vm_id");
  if (!is_pass(kind)) throw UsageError(fmt::format("kind: expected full or incremental, not {}", kind));
  VmRecord vm = vms_.get_vm(vm_id);
  // Its volumes are on a CloudStack VM now, not on the OMA: nothing to copy into.
  if (vm.status == VmStatus::CutOver)
    throw Conflict(fmt::format("VM {} ({}) has been cut over: no more replication", vm_id, vm.name));
  if (vm.status == VmStatus::TestFailover) {
    throw Conflict(fmt::format("VM {} ({}) is in a test failover: clean it up first (POST "
                               "/api/v1/vms/{}/test-failover/cleanup), then replication continues",
                               vm_id, vm.name, vm_id));
  }
  auto disks = vms_.list_disks(vm_id);
  if (disks.empty()) throw UsageError(fmt::format("VM {} has no disks to replicate", vm_id));
  JobRecord job;
  job.job_id = new_uuid();
  job.vm_id = vm_id;
  job.kind = kind;
  job.status = JobStatus::Preparing;
  job.phase = "preparing volumes";
  job.created_at = now_ms();
  jobs_.create_job(job, job_disk_rows(job, disks, kind == JobKind::Incremental));
  add_event(
      job.job_id, EventLevel::Info,
      fmt::format("{} replication of VM {} ({}) with {} disk(s) created", kind, vm.name, vm_id, disks.size()));
  launch(job.job_id);
  return job.job_id;
}

std::string JobManager::start_custom(const std::string& vm_id, JobKind kind, bool with_final_pass,
                                     JobBody body) {
  check_uuid(vm_id, "vm_id");
  VmRecord vm = vms_.get_vm(vm_id);
  JobRecord job;
  job.job_id = new_uuid();
  job.vm_id = vm_id;
  job.kind = kind;
  job.status = JobStatus::Running;
  job.phase = "starting";
  job.created_at = now_ms();
  std::vector<JobDiskRecord> jd;
  if (with_final_pass) jd = job_disk_rows(job, vms_.list_disks(vm_id), true);
  {
    std::lock_guard lock(mu_);
    bodies_[job.job_id] = std::move(body);
  }
  try {
    jobs_.create_job(job, jd);
  } catch (...) {
    std::lock_guard lock(mu_);
    bodies_.erase(job.job_id);
    throw;
  }
  add_event(job.job_id, EventLevel::Info, fmt::format("{} of VM {} ({}) created", kind, vm.name, vm_id));
  launch(job.job_id);
  return job.job_id;
}

void JobManager::cancel(const std::string& job_id) {
  JobRecord j = jobs_.get_job(job_id);
  if (is_terminal(j.status)) throw Conflict(fmt::format("job {} has already ended ({})", job_id, j.status));
  if (!is_pass(j.kind)) {
    throw Conflict(fmt::format("job {} is a {}, which cannot be cancelled: it rolls back by itself if a step fails",
                               job_id, j.kind));
  }
  jobs_.request_cancel(job_id);
  add_event(job_id, EventLevel::Warn, "cancellation requested");
  {
    std::lock_guard lock(mu_);
    if (auto it = calls_.find(job_id); it != calls_.end()) it->second->abort();  // the runner sees it now
  }
  cv_.notify_all();
}

int JobManager::recover() {
  int n = 0;
  for (const auto& j : jobs_.active_jobs()) {
    if (options_.runs_here && !options_.runs_here(j.vm_id)) {
      log::info("job {} (VM {}) is active on another OMA node: not resumed here", j.job_id, j.vm_id);
      continue;
    }
    add_event(j.job_id, EventLevel::Warn,
              fmt::format("OMA restarted: resuming the job from state '{}'", j.status));
    log::info("recovering job {} (VM {}) in state {}", j.job_id, j.vm_id, j.status);
    launch(j.job_id);
    ++n;
  }
  return n;
}

bool JobManager::adopt(const std::string& job_id) {
  JobRecord j = jobs_.get_job(job_id);
  if (!is_pass(j.kind) || is_terminal(j.status)) return false;
  {
    std::lock_guard lock(mu_);
    // A runner still here is running it (one that handed it off returned long before:
    // the volumes' detach and attach came in between).
    if (runners_.count(job_id) &&
        std::find(finished_.begin(), finished_.end(), job_id) == finished_.end())
      return false;
  }
  launch(job_id);
  return true;
}

void JobManager::shutdown() {
  std::map<std::string, std::thread> runners;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    runners.swap(runners_);
    for (auto& [id, call] : calls_) call->abort();  // long polls end now, not after their wait
  }
  cv_.notify_all();
  for (auto& [id, t] : runners) t.join();
}

void JobManager::launch(const std::string& job_id) {
  std::lock_guard lock(mu_);
  if (stopping_) throw Error("the OMA is shutting down: no new jobs");
  // Reap runners that have ended (each announced itself as its last locked act), so a
  // long-lived OMA does not accumulate finished threads.
  for (const auto& id : finished_) {
    auto it = runners_.find(id);
    if (it != runners_.end()) {
      it->second.join();
      runners_.erase(it);
    }
  }
  finished_.clear();
  if (runners_.count(job_id)) throw Error(fmt::format("job {} is already being run", job_id));
  runners_[job_id] = std::thread([this, job_id] {
    run(job_id);
    std::lock_guard done(mu_);
    finished_.push_back(job_id);
  });
}

bool JobManager::sleep_for(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, d, [&] { return stopping_; });
  return !stopping_;
}

std::shared_ptr<VmaClient> JobManager::vma_for(const std::string& vm_id) {
  if (options_.vma_for_vm) {
    if (auto c = options_.vma_for_vm(vm_id)) return c;
  }
  return std::shared_ptr<VmaClient>(&vma_, [](VmaClient*) {});  // not owned
}

void JobManager::check_cancel(const std::string& job_id) {
  {
    std::lock_guard lock(mu_);
    if (stopping_) throw ShuttingDown{};
  }
  JobRecord j = jobs_.get_job(job_id);
  if (is_terminal(j.status)) throw EndedElsewhere{enum_name(j.status)};
  if (j.cancel_requested) throw Cancelled{};
}

void JobManager::run_custom(const JobRecord& job) {
  JobBody body;
  {
    std::lock_guard lock(mu_);
    auto it = bodies_.find(job.job_id);
    if (it != bodies_.end()) {
      body = std::move(it->second);
      bodies_.erase(it);
    }
  }
  if (!body) return end_interrupted(job);
  VmStatus vm_status = body(job);
  // Another node failed it meanwhile (this node was frozen past its lease and the VM was
  // taken over, nodes/node_failover.h): its end is that node's, not overwritten here.
  if (is_terminal(jobs_.get_job(job.job_id).status)) throw EndedElsewhere{enum_name(jobs_.get_job(job.job_id).status)};
  // One transaction: a pass started between releasing the VM and setting its status
  // would find a cut-over VM "replicated" (issue 16).
  finish(job.job_id, JobStatus::Completed, std::nullopt, vm_status);
  if (options_.after_finish) options_.after_finish(job.job_id);
  add_event(job.job_id, EventLevel::Info, fmt::format("{} completed", job.kind));
}

std::string JobManager::interrupted_error(const JobRecord& job) {
  std::vector<std::string> running;
  for (const auto& step : jobs_.list_steps(job.job_id)) {
    if (step.status == StepStatus::Running) running.push_back(step.name);
  }
  std::string name = job.vm_id;
  if (auto vm = vms_.find_vm(job.vm_id)) name = fmt::format("{} ({})", vm->name, job.vm_id);
  // The source's power state as the VMA sees it now, so the operator knows whether the
  // job left it off; asked of the VMA, never assumed from the steps.
  std::string source;
  try {
    bool on = vma_for(job.vm_id)->describe_vm(job.vm_id).power_state == protocol::PowerState::PoweredOn;
    source = on ? "the source VM is powered on"
                : "the source VM is powered OFF (power it on in vCenter if it must run until the next attempt)";
  } catch (const std::exception& e) {
    source = fmt::format("the source VM's power state could not be read from the VMA ({}): check it in vCenter",
                         e.what());
  }
  return fmt::format("the OMA restarted during this {} (last phase: {}) of VM {}{}; it was not resumed and nothing "
                     "was rolled back; {}{}. Check the job's steps (a step after the final pass may have detached "
                     "volumes or built a VM in CloudStack), then start the {} again: it makes a new final pass from "
                     "the last committed change IDs",
                     job.kind, job.phase, name,
                     running.empty() ? "" : fmt::format(", interrupted at step(s) {}", fmt::join(running, ", ")),
                     source, writer_possible(job.job_id) ? "; the VMA's copy of the final pass has been stopped" : "",
                     job.kind);
}

void JobManager::end_interrupted(const JobRecord& job) {
  if (job.kind == JobKind::BootCheck || job.kind == JobKind::Inspection) return end_interrupted_check(job);
  std::string error = interrupted_error(job);  // first: stop_writer changes the phase
  // The VMA may still be copying the final pass: nothing starts on the VM under it.
  if (writer_possible(job.job_id)) stop_writer(job, JobStatus::Unknown, error);  // ShuttingDown: at the next start
  for (const auto& step : jobs_.list_steps(job.job_id)) {
    if (step.status == StepStatus::Running)
      jobs_.end_step(job.job_id, step.seq, StepStatus::Failed, "interrupted: the OMA restarted");
  }
  log::error("job {}: {}", job.job_id, error);
  add_event(job.job_id, EventLevel::Error, error);
  finish(job.job_id, JobStatus::Failed, error, interrupted_status(job.kind));
}

void JobManager::end_interrupted_check(const JobRecord& job) {
  // A boot check only ever wrote to overlays in its scratch directory, which the OMA
  // empties at start, an inspection wrote nothing, and neither started a copy: nothing
  // to stop or undo, and the VM's volumes are as the pass before it left them (they
  // start only on a replicated VM).
  for (const auto& step : jobs_.list_steps(job.job_id)) {
    if (step.status == StepStatus::Running)
      jobs_.end_step(job.job_id, step.seq, StepStatus::Failed, "interrupted: the OMA restarted");
  }
  const char* what = job.kind == JobKind::BootCheck ? "boot check" : "inspection";
  std::string error = fmt::format("the OMA restarted during this {} (last phase: {}); it never writes the VM's "
                                  "volumes, so nothing was left to undo: start the {} again",
                                  what, job.phase, what);
  log::warn("job {}: {}", job.job_id, error);
  add_event(job.job_id, EventLevel::Warn, error);
  finish(job.job_id, JobStatus::Failed, error, VmStatus::Replicated);
}

void JobManager::replicate_pass(const std::string& job_id) {
  try {
    JobRecord j = jobs_.get_job(job_id);
    prepare(j);
    set_status(job_id, JobStatus::Exporting, "final pass: exporting disks");
    export_and_replicate(j);
    set_status(job_id, JobStatus::Copying, "final pass: copying");
    auto vma_ended = poll(j);
    set_status(job_id, JobStatus::Committing, "final pass: committing change IDs");
    Step step(jobs_, job_id, notifier(job_id), "committing change IDs");
    jobs_.commit_change_ids(job_id);
    step.done();
    record_reporting(job_id, vma_ended);
    set_status(job_id, JobStatus::Running, "final pass done");
  } catch (const ShuttingDown&) {
    throw Error(fmt::format("job {}: the OMA is stopping, so the final pass was interrupted", job_id));
  } catch (const Cancelled&) {
    throw Error(fmt::format("job {}: the final pass was cancelled", job_id));
  } catch (const std::exception& e) {
    // The body goes on to roll back or build the VM from the volumes: not under a copy.
    try {
      if (writer_possible(job_id)) {
        stop_writer(jobs_.get_job(job_id), JobStatus::Unknown, e.what());
        set_status(job_id, JobStatus::Running, "final pass failed; the VMA's copy has stopped");
      }
    } catch (const ShuttingDown&) {
      throw Error(fmt::format("job {}: the OMA is stopping before the VMA's copy was seen stopped: {}", job_id,
                              e.what()));
    }
    throw;
  }
}

bool JobManager::writer_possible(const std::string& job_id) { return jobs_.vma_instance(job_id).has_value(); }

void JobManager::end_pass(const std::string& job_id, JobStatus end, const std::string& error) {
  try {
    if (writer_possible(job_id))
      stop_writer(jobs_.get_job(job_id), end == JobStatus::Cancelled ? JobStatus::Cancelling : JobStatus::Unknown,
                  error);
    finish(job_id, end, error);
    if (end == JobStatus::Cancelled) add_event(job_id, EventLevel::Info, "job cancelled");
  } catch (const ShuttingDown&) {
    log::info("job {}: OMA stopping before the VMA's copy was seen stopped; the next start goes on with it", job_id);
  } catch (const std::exception& e) {
    log::error("job {}: cannot record its end: {}", job_id, e.what());
  }
}

void JobManager::stop_writer(const JobRecord& job, JobStatus holding, const std::string& error) {
  set_status(job.job_id, holding,
             holding == JobStatus::Cancelling ? "cancelling: stopping the copy on the VMA"
                                              : "the VMA may still be writing: stopping its copy",
             error);
  std::vector<std::string> exports;
  for (const auto& d : jobs_.job_disks(job.job_id)) exports.push_back(d.export_name);
  for (bool first = true;; first = false) {
    try {
      vma_for(job.vm_id)->stop(job.job_id);
      add_event(job.job_id, EventLevel::Info, "the VMA confirmed that the job's copy has stopped");
      return;
    } catch (const std::exception& e) {
      if (first) add_event(job.job_id, EventLevel::Warn, fmt::format("could not tell the VMA to stop: {}", e.what()));
    }
    try {
      exports_.backend().cut_off(exports);
      add_event(job.job_id, EventLevel::Warn,
                fmt::format("the VMA cannot be reached, so the export server closed every connection to {} "
                            "and withdrew them until the next pass: nothing writes to the volumes any more",
                            fmt::join(exports, ", ")));
      return;
    } catch (const std::exception& e) {
      if (first) {
        add_event(job.job_id, EventLevel::Error,
                  fmt::format("cannot cut the VMA off {}: {}; the job keeps its VM (no pass, cutover or test "
                              "failover starts) and the OMA tries again",
                              fmt::join(exports, ", "), e.what()));
      }
    }
    if (!sleep_for(options_.poll_interval)) throw ShuttingDown{};
  }
}

void JobManager::run(const std::string& job_id) {
  try {
    JobRecord j = jobs_.get_job(job_id);
    if (!is_pass(j.kind)) return run_custom(j);
    if (j.status == JobStatus::Cancelling) return end_pass(job_id, JobStatus::Cancelled, "cancelled by request");
    if (j.status == JobStatus::Unknown) return end_pass(job_id, JobStatus::Failed, j.error.value_or(j.phase));
    if (j.status == JobStatus::Preparing) {
      if (options_.hand_off) {
        check_cancel(job_id);
        JobOptions::HandOff h = options_.hand_off(j);
        if (h.handed_off) {
          add_event(job_id, EventLevel::Info, h.message);
          set_status(job_id, JobStatus::Preparing, "moving volumes to another OMA node");
          log::info("job {}: {}", job_id, h.message);
          return;  // the node the volumes move to adopts it
        }
        if (!h.message.empty()) add_event(job_id, EventLevel::Warn, h.message);
      }
      prepare(j);
      set_status(job_id, JobStatus::Exporting, "exporting disks");
      j.status = JobStatus::Exporting;
    }
    if (j.status == JobStatus::Exporting) {
      export_and_replicate(j);
      set_status(job_id, JobStatus::Copying, "copying");
      j.status = JobStatus::Copying;
    }
    std::optional<SteadyTime> vma_ended;
    if (j.status == JobStatus::Copying) {
      vma_ended = poll(j);
      set_status(job_id, JobStatus::Committing, "committing change IDs");
      j.status = JobStatus::Committing;
    }
    if (j.status == JobStatus::Committing) commit(j, vma_ended);
  } catch (const ShuttingDown&) {
    log::info("job {}: OMA stopping; the job resumes at the next start", job_id);
  } catch (const EndedElsewhere& e) {
    log::warn("job {}: it ended ({}) while this node ran it (another OMA node took its VM over); this node leaves "
              "it and its volumes alone",
              job_id, e.status);
  } catch (const Cancelled&) {
    end_pass(job_id, JobStatus::Cancelled, "cancelled by request");
  } catch (const std::exception& e) {
    log::error("job {} failed: {}", job_id, e.what());
    try {
      add_event(job_id, EventLevel::Error, e.what());
      JobRecord ended = jobs_.get_job(job_id);
      if (is_pass(ended.kind)) return end_pass(job_id, JobStatus::Failed, e.what());
      if (is_terminal(ended.status)) {  // failed by another node's takeover: left as it recorded it
        log::warn("job {}: it ended ({}) while this node ran it (another OMA node took its VM over); its end here "
                  "is not recorded",
                  job_id, ended.status);
        return;
      }
      auto* f = dynamic_cast<const JobFailed*>(&e);
      finish(job_id, JobStatus::Failed, std::string(e.what()),
             f ? std::optional(f->vm_status()) : std::nullopt);
    } catch (const std::exception& e2) {
      log::error("job {}: cannot record its failure: {}", job_id, e2.what());
    }
  }
}

void JobManager::preflight(const JobRecord& job) {
  Step step(jobs_, job.job_id, notifier(job.job_id), "preflight");
  protocol::DiscoveredVm vm = vma_for(job.vm_id)->describe_vm(job.vm_id);
  follow_grown_disks(job, vm);  // first: the target checks the sizes
  std::vector<protocol::PreflightFinding> findings = vm.findings;
  std::string notes = check_target(job, findings);
  if (!findings.empty()) {
    std::string lines;
    for (const auto& f : findings) lines += "\n  - " + f.text;
    throw Error(fmt::format("VM {} cannot be replicated; this job created nothing and did not touch the VM:{}",
                            job.vm_id, lines));
  }
  step.done(notes);
}

std::string JobManager::check_target(const JobRecord& job, std::vector<protocol::PreflightFinding>& findings) {
  if (!options_.target) return "";
  TargetReport report = options_.target->check(job.vm_id);
  findings.insert(findings.end(), report.blocking.begin(), report.blocking.end());
  for (const auto& f : report.cutover) {
    add_event(job.job_id, EventLevel::Warn,
              fmt::format("replication goes on, but a cutover would be refused: {}", f.text));
  }
  std::string notes;
  for (const auto& f : report.notes) notes += (notes.empty() ? "" : "\n") + f.text;
  return notes;
}

void JobManager::follow_grown_disks(const JobRecord& job, const protocol::DiscoveredVm& vm) {
  for (const auto& d : vms_.list_disks(job.vm_id)) {
    for (const auto& now : vm.disks) {
      if (now.disk_key.str() != d.disk_key || now.capacity_bytes <= d.capacity_bytes) continue;
      vms_.set_disk_grown(job.vm_id, d.disk_key, now.capacity_bytes);
      jobs_.clear_job_disk_base(job.job_id, d.disk_key);
      add_event(job.job_id, EventLevel::Warn,
                fmt::format("disk {} grew from {} to {} bytes in vCenter: its volume grows first and it gets a "
                            "full pass",
                            d.disk_key, d.capacity_bytes, now.capacity_bytes));
    }
  }
}

std::unique_lock<std::mutex> JobManager::wait_for_volume_slots(const JobRecord& job) {
  std::unique_lock admitted(volume_slots_mu_);
  if (!options_.target) return admitted;
  std::optional<Step> waiting;
  std::string last;
  for (;;) {
    check_cancel(job.job_id);
    VolumeSlots slots = options_.target->volume_slots(job.vm_id);
    if (slots.needed <= slots.free) {
      if (waiting) waiting->done(fmt::format("{} slot(s) free", slots.free));
      return admitted;
    }
    std::string phase = fmt::format("waiting for {} free data-volume slot(s) on the OMA's VM ({} free: {})",
                                     slots.needed, slots.free, slots.limit);
    if (!waiting) waiting.emplace(jobs_, job.job_id, notifier(job.job_id), "waiting for data-volume slots");
    if (phase != last) {
      set_status(job.job_id, job.status, phase);
      add_event(job.job_id, EventLevel::Warn,
                phase + "; the pass goes on when volumes are freed (a VM cut over or removed, a volume "
                        "detached), or raise the hypervisor's maxdatavolumeslimit");
      last = phase;
    }
    admitted.unlock();
    if (!sleep_for(options_.slot_poll_interval)) throw ShuttingDown{};
    admitted.lock();
  }
}

void JobManager::prepare(const JobRecord& job) {
  preflight(job);
  auto admitted = wait_for_volume_slots(job);
  Step step(jobs_, job.job_id, notifier(job.job_id), "preparing volumes");
  for (const auto& d : vms_.list_disks(job.vm_id)) {
    check_cancel(job.job_id);
    VolumeRecord v = volumes_.ensure_volume(d);
    add_event(job.job_id, EventLevel::Info, fmt::format("disk {}: volume {} ({} bytes)", d.disk_key, v.volume_id,
                                                           v.size_bytes));
  }
  step.done();
}

void JobManager::export_and_replicate(const JobRecord& job) {
  protocol::ReplicateRequest req;
  {
    Step step(jobs_, job.job_id, notifier(job.job_id), "exporting");
    auto job_disks = jobs_.job_disks(job.job_id);
    for (const auto& d : vms_.list_disks(job.vm_id)) {
      check_cancel(job.job_id);
      // ensure_volume, not find: idempotent by identity, so a resumed job never depends
      // on how far the previous run got.
      auto v = std::optional<VolumeRecord>(volumes_.ensure_volume(d));
      if (v->size_bytes < d.capacity_bytes) {  // never copy a disk into less than its size
        throw Error(fmt::format("VM {} disk {}: volume {} has {} bytes, fewer than the disk's {}: the copy would be "
                                "truncated, so nothing was copied; start the pass again (the volume grows first)",
                                job.vm_id, d.disk_key, v->volume_id, v->size_bytes, d.capacity_bytes));
      }
      ExportRecord e = exports_.ensure_export(d, *v);
      exports_.verify(e, static_cast<uint64_t>(v->size_bytes));
      jobs_.set_job_disk_export(job.job_id, d.disk_key, e.export_name);
      record_written_baseline(job, d.disk_key, e.export_name);
      const JobDiskRecord* jd = nullptr;
      for (const auto& x : job_disks) if (x.disk_key == d.disk_key) jd = &x;
      if (!jd) throw Error(fmt::format("job {}: VM {} gained disk {} after the job started: start a new job",
                                       job.job_id, job.vm_id, d.disk_key));
      req.disks.push_back(
          {protocol::DiskKey::parse(d.disk_key), d.unit, d.capacity_bytes, e.export_name, jd->change_id_base});
      add_event(job.job_id, EventLevel::Info,
                fmt::format("disk {}: export {} verified", d.disk_key, e.export_name));
    }
    step.done();
  }
  check_cancel(job.job_id);
  Step step(jobs_, job.job_id, notifier(job.job_id), "starting copy on the VMA");
  req.job_id = job.job_id;
  req.vm_id = job.vm_id;
  // A cutover's final pass is incremental.
  req.kind = job.kind == JobKind::Full ? protocol::PassKind::Full : protocol::PassKind::Incremental;
  req.nbd = {options_.nbd_host, options_.nbd_port, options_.nbd_tls};
  auto vma = vma_for(job.vm_id);
  // From here on the VMA may copy, even if this call fails: how the job ends depends on it.
  if (!jobs_.vma_instance(job.job_id)) jobs_.set_vma_instance(job.job_id, "");
  std::string instance = vma->replicate(req);
  if (!instance.empty()) jobs_.set_vma_instance(job.job_id, instance);
  step.done(fmt::format("{} accepted the job", vma->describe()));
}

std::optional<JobManager::SteadyTime> JobManager::poll(const JobRecord& job) {
  Step step(jobs_, job.job_id, notifier(job.job_id), "copying");
  {
    std::lock_guard lock(live_mu_);
    live_[job.job_id];  // followed: notify() says so
  }
  // However poll() ends, the observer learns that the database has the job again.
  struct Unfollow {
    JobManager& m;
    const std::string& job_id;
    ~Unfollow() {
      {
        std::lock_guard lock(m.live_mu_);
        m.live_.erase(job_id);
      }
      m.notify(job_id);
    }
  } unfollow{*this, job.job_id};
  std::optional<SteadyTime> vma_ended;
  auto vma = vma_for(job.vm_id);
  auto last_ok = std::chrono::steady_clock::now();
  auto last_write = SteadyTime{};
  std::string last_error;
  std::string last_phase;
  std::set<std::string> noted;  // resume notes already in the job's log
  // The VMA's revision of the job from its last answer: the next call returns when the
  // job changed there. None: the VMA did not hold the call (or the call failed), so the
  // next one waits poll_interval first, as polling did.
  std::optional<int64_t> revision;
  bool wait_first = false;  // poll_interval before the next call
  for (;;) {
    if (wait_first && !sleep_for(options_.poll_interval)) throw ShuttingDown{};
    wait_first = true;
    check_cancel(job.job_id);
    protocol::JobProgress p;
    try {
      bool aborted = false;
      p = ask_progress(*vma, job.job_id, revision, aborted);
      if (aborted) {  // shutdown or cancel: check_cancel says which, at once
        wait_first = false;
        continue;
      }
    } catch (const VmaJobUnknown& e) {
      throw Error(fmt::format("the VMA no longer knows job {} (it restarted or lost it): start a new job; {}",
                              job.job_id, e.what()));
    } catch (const VmaUnreachable& e) {
      poller_errors_++;
      revision.reset();
      auto silent = std::chrono::steady_clock::now() - last_ok;
      if (last_error.empty()) add_event(job.job_id, EventLevel::Warn, e.what());
      last_error = e.what();
      if (silent > options_.vma_timeout) {
        throw Error(fmt::format("no progress from the VMA for {} s (limit {} s): {}; check the SSH tunnel and the VMA",
                                std::chrono::duration_cast<std::chrono::seconds>(silent).count(),
                                std::chrono::duration_cast<std::chrono::seconds>(options_.vma_timeout).count(),
                                last_error));
      }
      continue;
    } catch (const Error&) {
      poller_errors_++;
      throw;  // the VMA answered something that breaks the protocol: do not guess
    }
    last_ok = std::chrono::steady_clock::now();  // also when this answer arrived
    if (!last_error.empty()) add_event(job.job_id, EventLevel::Info, "the VMA answers again");
    last_error.clear();
    // Of the instance that answered: a restarted VMA counts from 0 again, and it answers
    // at once when the revision asked for is not its own (newer or older).
    revision = p.revision;
    wait_first = !revision;  // a VMA that did not hold the call is polled

    auto known = jobs_.vma_instance(job.job_id);
    if (!known || known->empty()) {
      jobs_.set_vma_instance(job.job_id, p.vma_instance);
    } else if (*known != p.vma_instance) {
      // A VMA that resumes its passes reports the job queued or running again; one
      // that cannot reports it failed ("interrupted").
      if (p.status == protocol::VmaJobStatus::Failed || p.status == protocol::VmaJobStatus::Stopped) {
        throw Error(fmt::format("the VMA restarted during the copy (instance {} is now {}): its copy is gone; "
                                "start a new job",
                                *known, p.vma_instance));
      }
      jobs_.set_vma_instance(job.job_id, p.vma_instance);
      add_event(job.job_id, EventLevel::Warn,
                fmt::format("the VMA restarted during the copy (instance {} is now {}): it resumes the pass "
                            "from each disk's last flushed range while the pass's snapshot exists",
                            *known, p.vma_instance));
    }

    auto disks = jobs_.job_disks(job.job_id);
    std::vector<JobDiskRecord> now;
    std::set<std::string> seen;
    size_t completed = 0;
    std::vector<std::string> failed;  // "disk KEY failed on the VMA: ERROR"
    for (const auto& dp : p.disks) {
      std::string key = dp.disk_key.str();
      auto it = std::find_if(disks.begin(), disks.end(), [&](const auto& d) { return d.disk_key == key; });
      if (it == disks.end() || !seen.insert(key).second) {
        poller_errors_++;
        throw Error(fmt::format("the VMA reported progress for disk {}, which job {} does not have once "
                                "(VMA protocol mismatch)",
                                key, job.job_id));
      }
      note_resume(job.job_id, key, dp, noted);
      std::optional<std::string> unverified;
      if (dp.status == protocol::DiskStatus::Completed) unverified = unverified_completion(job, *it, dp);
      JobDiskRecord d = *it;
      d.status = dp.status;
      d.phase = dp.phase;
      d.bytes_done = dp.bytes_done;
      d.bytes_total = dp.bytes_total;
      d.throughput_bps = dp.throughput_bps;
      d.eta_seconds = dp.eta_seconds;
      d.change_id_new = dp.change_id;
      d.error = dp.error;
      d.phases = dp.phases;
      if (unverified) {  // never recorded as completed, so never committed
        d.status = protocol::DiskStatus::Failed;
        d.phase = protocol::DiskPhase::Failed;
        d.change_id_new = std::nullopt;
        d.error = unverified;
        failed.push_back(*unverified);
      }
      // The protocol guarantees a failed disk's error and a completed disk's change ID.
      if (dp.status == protocol::DiskStatus::Failed) {
        failed.push_back(fmt::format("disk {} failed on the VMA: {}", key, dp.error.value_or("")));
      }
      if (d.status == protocol::DiskStatus::Completed) ++completed;
      now.push_back(std::move(d));
    }
    // Every disk of this answer is recorded first: a disk that failed is reported with
    // the others it stopped (the VMA marks it failed before them), never left out.
    record_progress(job.job_id, disks, now, last_write);
    if (!failed.empty()) throw Error(fmt::format("VM {} {}", job.vm_id, fmt::join(failed, "; ")));
    std::string phase = fmt::format("copying: {}/{} disks completed", completed, disks.size());
    if (phase != last_phase) {
      set_status(job.job_id, JobStatus::Copying, phase);
      last_phase = phase;
    } else {
      notify(job.job_id);
    }
    // Done once every disk completed and the VMA closed the pass (snapshot removed):
    // its phase times are then complete.
    bool closed = p.status != protocol::VmaJobStatus::Queued && p.status != protocol::VmaJobStatus::Running;
    if (completed == disks.size() && seen.size() == disks.size() && closed) {
      auto ago = std::chrono::duration<double>(p.ended_seconds_ago.value_or(0));
      vma_ended = last_ok - std::chrono::duration_cast<SteadyTime::duration>(ago);
      break;
    }
  }
  step.done();
  return vma_ended;
}

protocol::JobProgress JobManager::ask_progress(VmaClient& vma, const std::string& job_id,
                                               std::optional<int64_t> revision, bool& aborted) {
  if (options_.progress_wait.count() <= 0) return vma.progress(job_id);
  auto call = std::make_shared<CallAbort>();
  {
    std::lock_guard lock(mu_);
    if (stopping_) call->abort();
    calls_[job_id] = call;
  }
  struct Forget {
    JobManager& m;
    const std::string& job_id;
    ~Forget() {
      std::lock_guard lock(m.mu_);
      m.calls_.erase(job_id);
    }
  } forget{*this, job_id};
  int64_t wait = std::min<int64_t>(options_.progress_wait.count(), protocol::kMaxProgressWaitMs);
  try {
    return vma.wait_progress(job_id, {revision, wait}, call.get());
  } catch (const VmaUnreachable&) {
    if (!call->aborted()) throw;
    aborted = true;
    return {};
  }
}

void JobManager::record_progress(const std::string& job_id, const std::vector<JobDiskRecord>& recorded,
                                 const std::vector<JobDiskRecord>& now, SteadyTime& last_write) {
  auto same_state = [](const JobDiskRecord& a, const JobDiskRecord& b) {
    return a.status == b.status && a.phase == b.phase && a.error == b.error && a.change_id_new == b.change_id_new &&
           a.phases == b.phases;
  };
  auto same_bytes = [](const JobDiskRecord& a, const JobDiskRecord& b) {
    return a.bytes_done == b.bytes_done && a.bytes_total == b.bytes_total && a.throughput_bps == b.throughput_bps &&
           a.eta_seconds == b.eta_seconds;
  };
  bool state_changed = false, bytes_changed = false;
  for (const auto& d : now) {
    auto it = std::find_if(recorded.begin(), recorded.end(), [&](const auto& r) { return r.disk_key == d.disk_key; });
    state_changed |= !same_state(*it, d);
    bytes_changed |= !same_bytes(*it, d);
  }
  auto t = std::chrono::steady_clock::now();
  bool due = bytes_changed && t - last_write >= options_.progress_record_interval;
  if (!state_changed && !due) {
    std::lock_guard lock(live_mu_);
    live_[job_id] = bytes_changed ? now : std::vector<JobDiskRecord>{};
    return;
  }
  for (const auto& d : now) {
    auto it = std::find_if(recorded.begin(), recorded.end(), [&](const auto& r) { return r.disk_key == d.disk_key; });
    if (!same_state(*it, d) || !same_bytes(*it, d)) jobs_.update_disk_progress(d);
    if (it->phases != d.phases) jobs_.set_disk_phases(job_id, d.disk_key, d.phases);  // a phase ended
  }
  jobs_.roll_up_progress(job_id);
  last_write = t;
  std::lock_guard lock(live_mu_);
  live_[job_id].clear();
}

void JobManager::set_observer(JobObserver* observer) {
  std::lock_guard lock(observer_mu_);
  observer_ = observer;
}

void JobManager::notify(const std::string& job_id) {
  std::lock_guard lock(observer_mu_);
  try {
    if (!observer_ || !observer_->wants_changes()) return;
    JobRecord job = jobs_.get_job(job_id);
    std::vector<JobDiskRecord> disks = jobs_.job_disks(job_id);
    bool live = false;
    {
      std::lock_guard l(live_mu_);
      auto it = live_.find(job_id);
      if (it != live_.end()) {
        live = true;
        if (!it->second.empty()) disks = it->second;
      }
    }
    if (live) {  // the totals as roll_up_progress would record them
      job.bytes_done = job.bytes_total = 0;
      job.throughput_bps = job.eta_seconds = 0;
      for (const auto& d : disks) {
        job.bytes_done += d.bytes_done;
        job.bytes_total += d.bytes_total;
        job.throughput_bps += d.throughput_bps;
        job.eta_seconds = std::max(job.eta_seconds, d.eta_seconds);
      }
    }
    observer_->job_changed(job, disks, live);
  } catch (const std::exception& e) {
    log::warn("job {}: cannot tell the event stream of its change (it finds it in the database later): {}", job_id,
              e.what());
  }
}

void JobManager::add_event(const std::string& job_id, EventLevel level, const std::string& message) {
  jobs_.add_event(job_id, level, message);
  notify(job_id);
}

void JobManager::set_status(const std::string& job_id, JobStatus status, const std::string& phase) {
  jobs_.set_job_status(job_id, status, phase);
  notify(job_id);
}

void JobManager::set_status(const std::string& job_id, JobStatus status, const std::string& phase,
                            const std::string& error) {
  jobs_.set_job_status(job_id, status, phase, error);
  notify(job_id);
}

void JobManager::finish(const std::string& job_id, JobStatus status, const std::optional<std::string>& error,
                        std::optional<VmStatus> vm_status) {
  jobs_.finish_job(job_id, status, error, vm_status);
  notify(job_id);
}

void JobManager::record_written_baseline(const JobRecord& job, const std::string& disk_key,
                                         const std::string& export_name) {
  std::optional<uint64_t> count = exports_.backend().written_bytes(export_name);
  if (!count) {
    add_event(job.job_id, EventLevel::Warn,
              fmt::format("disk {}: the {} export server cannot count written bytes, so the VMA's report that "
                          "this disk completed will not be checked against export {}",
                          disk_key, exports_.backend().name(), export_name));
    return;
  }
  // Kept if recorded already: a resumed job must not move it past bytes already copied.
  jobs_.set_written_baseline(job.job_id, disk_key,
                             static_cast<int64_t>(std::min<uint64_t>(*count, std::numeric_limits<int64_t>::max())));
}

std::optional<std::string> JobManager::unverified_completion(const JobRecord& job, const JobDiskRecord& d,
                                                             const protocol::DiskProgress& dp) {
  if (!d.written_baseline) return std::nullopt;  // not countable (see record_written_baseline)
  std::optional<uint64_t> now = exports_.backend().written_bytes(d.export_name);
  if (!now) return std::nullopt;
  uint64_t base = static_cast<uint64_t>(*d.written_baseline);
  uint64_t seen = *now >= base ? *now - base : 0;
  uint64_t claimed = static_cast<uint64_t>(std::max<int64_t>(dp.bytes_done, 0));
  if (seen >= claimed) return std::nullopt;
  std::string vm = job.vm_id;
  if (auto v = vms_.find_vm(job.vm_id)) vm = fmt::format("{} ({})", v->name, job.vm_id);
  return fmt::format("disk {} of VM {}: the VMA's report could not be verified: it reported the disk completed with {} "
                     "bytes copied in this pass ({} of them resumed), but export {} saw only {} bytes written and "
                     "flushed since the pass started, so no change ID of this pass is committed. Check the VMA (its "
                     "log, its version, whether it was tampered with), then run the pass again",
                     d.disk_key, vm, claimed, dp.bytes_resumed, d.export_name, seen);
}

// Records in the job's log, once each, why a disk started over instead of resuming,
// and how much a resumed disk did not copy again.
// `noted`: the notes this poll loop has already seen recorded.
void JobManager::note_resume(const std::string& job_id, const std::string& disk_key, const protocol::DiskProgress& dp,
                             std::set<std::string>& noted) {
  std::vector<std::string> notes;
  if (dp.restarted) notes.push_back(fmt::format("disk {} started over: {}", disk_key, *dp.restarted));
  if (dp.status == protocol::DiskStatus::Completed && dp.bytes_resumed > 0) {
    notes.push_back(fmt::format("disk {} resumed: {} bytes copied and flushed before the interruption were not "
                                "copied again, {} bytes copied after it",
                                disk_key, dp.bytes_resumed, dp.bytes_done - dp.bytes_resumed));
  }
  std::erase_if(notes, [&](const std::string& n) { return noted.count(n) > 0; });
  if (notes.empty()) return;
  auto events = jobs_.list_events(job_id);  // an OMA restarted meanwhile may have recorded them
  for (const auto& note : notes) {
    noted.insert(note);
    bool known = std::any_of(events.begin(), events.end(), [&](const EventRecord& e) { return e.message == note; });
    if (!known) add_event(job_id, note.find("started over") != std::string::npos ? EventLevel::Warn
                                                                                          : EventLevel::Info,
                                note);
  }
}

void JobManager::record_reporting(const std::string& job_id, std::optional<SteadyTime> vma_ended) {
  if (!vma_ended) return;  // resumed after an OMA restart: when the VMA ended is not known
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - *vma_ended).count();
  try {
    for (auto& d : jobs_.job_disks(job_id)) {
      d.phases.push_back({protocol::PassPhase::Reporting, std::max(0.0, seconds)});
      jobs_.set_disk_phases(job_id, d.disk_key, d.phases);
    }
  } catch (const std::exception& e) {
    // The pass is committed; only its breakdown lacks the last part.
    log::warn("job {}: cannot record the reporting phase: {}", job_id, e.what());
  }
}

void JobManager::commit(const JobRecord& job, std::optional<SteadyTime> vma_ended) {
  Step step(jobs_, job.job_id, notifier(job.job_id), "committing change IDs");
  jobs_.commit_change_ids(job.job_id);
  step.done();
  record_reporting(job.job_id, vma_ended);  // first: a completed job shows all its phases
  finish(job.job_id, JobStatus::Completed, std::nullopt);
  add_event(job.job_id, EventLevel::Info, "job completed: every disk copied and its change ID committed");
  if (options_.pass_completed) {
    try {
      options_.pass_completed(jobs_.get_job(job.job_id));
    } catch (const std::exception& e) {  // the pass is done; what follows it is not its failure
      log::warn("job {}: after the pass: {}", job.job_id, e.what());
    }
  }
}

}  // namespace mk::oma
