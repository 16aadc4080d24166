#include "oma/cutover/boot_check_service.h"

#include <fmt/format.h>
#include <openssl/evp.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/log.h"
#include "oma/cutover/inspection_service.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {
namespace {

using nlohmann::json;

std::string base64(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3), '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

// The length of the UTF-8 sequence at s[i], or 0 when it is not valid UTF-8.
size_t utf8_length(const std::string& s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((static_cast<unsigned char>(s[i + k]) >> 6) != 0x2) return 0;
  }
  return n;
}

// A screenshot larger than this (a graphical console at a high resolution) is not stored.
constexpr size_t kMaxScreenshotBytes = 4 << 20;

}  // namespace

std::string console_text(const std::string& bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (size_t i = 0; i < bytes.size();) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == 0x1b) {  // ESC [ parameters final-byte (colours, cursor moves), or ESC and one byte
      size_t j = i + 1;
      if (j < bytes.size() && bytes[j] == '[') {
        ++j;
        while (j < bytes.size() && !(bytes[j] >= 0x40 && bytes[j] <= 0x7e)) ++j;
      }
      i = j + 1;
      continue;
    }
    if (c < 0x20 || c == 0x7f) {
      if (c == '\n' || c == '\t') out += static_cast<char>(c);
      ++i;
      continue;
    }
    const size_t n = utf8_length(bytes, i);
    if (n == 0) {
      out += '?';
      ++i;
    } else {
      out.append(bytes, i, n);
      i += n;
    }
  }
  return out;
}

BootCheckService::BootCheckService(VmRepository& vms, JobRepository& job_log, StorageRepository& storage,
                                   BootCheckRepository& results, ConfigRepository& config, JobManager& jobs,
                                   BootCheckConfig options)
    : vms_(vms), job_log_(job_log), storage_(storage), results_(results), config_repo_(config), jobs_(jobs),
      config_(std::move(options)) {
  if (!config_.inspect) config_.inspect = guest::inspect_guest;
  if (!config_.run) config_.run = guest::boot_check;
  if (!config_.scratch_dir.empty()) {
    // Overlays of checks that died with an earlier run of this OMA (its data directory
    // is locked: no other OMA uses this directory).
    std::error_code ec;
    std::filesystem::create_directories(config_.scratch_dir, ec);
    for (const auto& entry : std::filesystem::directory_iterator(config_.scratch_dir, ec)) {
      if (entry.path().filename().string().rfind("mk-guest-", 0) != 0) continue;
      std::filesystem::remove_all(entry.path(), ec);
      log::warn("removed {}, left by a boot check that ended with the OMA", entry.path().string());
    }
  }
}

std::string BootCheckService::start(const std::string& vm_id, const std::string& started_by) {
  check_uuid(vm_id, "vm_id");
  VmRecord vm = vms_.get_vm(vm_id);
  std::vector<guest::DiskImage> images = readable_replicas(vms_, storage_, vm, "boot check");
  if (stopping_) throw Error("the OMA is stopping: no boot check starts now");
  return jobs_.start_custom(vm_id, JobKind::BootCheck, false, [=, this](const JobRecord& job) {
    return run(job, vm, images, started_by);
  });
}

VmStatus BootCheckService::run(const JobRecord& job, const VmRecord& vm, const std::vector<guest::DiskImage>& images,
                               const std::string& started_by) {
  const std::string& id = job.job_id;
  vms_.set_vm_status(vm.vm_id, VmStatus::BootChecking);
  BootCheckRecord record;
  record.vm_id = vm.vm_id;
  record.job_id = id;
  record.started_by = started_by;
  record.started_at = now_ms();
  json details = json::object();
  int64_t step = 0;
  // The verdict "did not boot" (stored) or an interruption (not stored): the job fails,
  // the VM is replicated again either way (its volumes were never written).
  auto not_booted = [&](const std::string& reason) {
    if (step) job_log_.end_step(id, step, StepStatus::Failed, reason);
    record.booted = false;
    record.reason = reason;
    record.details = details.dump(-1, ' ', false, json::error_handler_t::replace);  // guest text: maybe not UTF-8
    record.finished_at = now_ms();
    results_.put(record);
    return JobFailed(fmt::format("boot check of VM {} ({}): not booted: {}", vm.name, vm.vm_id, reason),
                     VmStatus::Replicated);
  };
  auto interrupted = [&](const std::string& where) {
    if (step) job_log_.end_step(id, step, StepStatus::Failed, "interrupted: the OMA is stopping");
    return JobFailed(fmt::format("boot check of VM {} ({}) interrupted during {}: the OMA is stopping; its overlays "
                                 "and qemu are gone and the volumes were never written: start it again",
                                 vm.name, vm.vm_id, where),
                     VmStatus::Replicated);
  };
  job_log_.add_event(id, EventLevel::Info,
                     fmt::format("boot check of VM {} ({} disk(s)) started by {}: overlays of the replicas are "
                                 "converted and booted; the replicas are only read",
                                 vm.name, images.size(), started_by));
  try {
    step = job_log_.begin_step(id, "guest-inspection");
    job_log_.set_job_status(id, JobStatus::Running, "inspecting the guest (read-only)");
    guest::InspectOptions io;
    io.timeout = config_.inspection_timeout;
    io.cancel = &stopping_;
    guest::GuestInspection g = config_.inspect(images, io);
    record.inspection_seconds = g.seconds;
    details["inspection"] = guest::to_json(g);
    if (stopping_) throw interrupted("the inspection");
    if (config_.inspected) config_.inspected(vm, id, g);
    if (!g.convertible) throw not_booted("not convertible: " + g.reason);
    job_log_.end_step(id, step, StepStatus::Completed, guest::summary(g));

    step = job_log_.begin_step(id, "boot-check");
    job_log_.set_job_status(id, JobStatus::Running, "converting overlays of the replicas, then booting them");
    guest::BootCheckOptions bo;
    bo.name = vm.name;
    bo.firmware = g.firmware;
    bo.boot_disk = g.boot_disk < 0 ? 0 : g.boot_disk;
    bo.limit = config_.limit;
    bo.conversion_timeout = config_.conversion_timeout;
    bo.cancel = &stopping_;
    bo.scratch_parent = config_.scratch_dir;
    if (!config_.log_dir.empty()) {
      std::error_code ec;  // a missing log directory must not fail the check: the tool then reports
      std::filesystem::create_directories(config_.log_dir, ec);
      bo.conversion_log = fmt::format("{}/boot-check-{}.log", config_.log_dir, vm.vm_id);
      std::filesystem::remove(bo.conversion_log, ec);  // the last check's log only
    }
    guest::BootCheckResult r = config_.run(images, bo);
    if (r.cancelled || stopping_) throw interrupted(r.converted ? "the boot" : "the conversion");
    record.conversion_seconds = r.conversion_seconds;
    record.boot_seconds = r.seconds;
    record.console_tail = console_text(r.console_tail);
    if (!r.screenshot.empty() && r.screenshot.size() <= kMaxScreenshotBytes) {
      record.screenshot_format = r.screenshot_format;
      record.screenshot_base64 = base64(r.screenshot);
    }
    json result = guest::to_json(r);
    result.erase("console_tail");  // a column of its own
    if (r.screenshot.size() > kMaxScreenshotBytes) {
      result["screenshot_error"] = fmt::format("not stored: {} bytes", r.screenshot.size());
    }
    details["result"] = result;
    if (!r.booted) throw not_booted(r.reason);
    job_log_.end_step(id, step, StepStatus::Completed,
                      fmt::format("booted: converted in {:.0f} s, booted in {:.0f} s ({}); {}", r.conversion_seconds,
                                  r.seconds, r.accel, r.reason));
    record.booted = true;
    record.reason = r.reason;
    record.details = details.dump(-1, ' ', false, json::error_handler_t::replace);  // guest text: maybe not UTF-8
    record.finished_at = now_ms();
    results_.put(record);
  } catch (const JobFailed&) {
    throw;
  } catch (const std::exception& e) {
    if (stopping_) throw interrupted("a step stopped by the OMA's stop");
    // A tool that could not run, a scratch directory that could not be made: stored as
    // the outcome too, so the VM's last boot check says what stopped it.
    throw not_booted(fmt::format("the boot check could not run: {}", e.what()));
  }
  job_log_.add_event(id, EventLevel::Info,
                     fmt::format("VM {} boots after conversion: {} (conversion {:.0f} s, boot {:.0f} s)", vm.name,
                                 record.reason, record.conversion_seconds, record.boot_seconds));
  return VmStatus::Replicated;
}

bool BootCheckService::runs_after_incremental() {
  auto s = config_repo_.get_setting(kBootCheckAfterIncremental);
  return s && !s->encrypted && s->value == "true";
}

void BootCheckService::after_pass(const JobRecord& pass) {
  if (pass.kind != JobKind::Incremental || stopping_ || !runs_after_incremental()) return;
  try {
    std::string id = start(pass.vm_id, "after_incremental");
    job_log_.add_event(pass.job_id, EventLevel::Info,
                       fmt::format("boot check {} started after this pass ({} is on)", id, kBootCheckAfterIncremental));
  } catch (const std::exception& e) {
    job_log_.add_event(pass.job_id, EventLevel::Warn,
                       fmt::format("no boot check after this pass ({} is on): {}", kBootCheckAfterIncremental,
                                   e.what()));
  }
}

void BootCheckService::stop() { stopping_ = true; }

}  // namespace mk::oma
