#include "oma/api/views.h"

namespace mk::oma::api {

using nlohmann::json;

json opt_json(const std::optional<std::string>& s) { return s ? json(*s) : json(nullptr); }
json opt_json(const std::optional<int64_t>& n) { return n ? json(*n) : json(nullptr); }

json vm_json(const VmRecord& v) {
  return {{"vm_id", v.vm_id},         {"name", v.name},         {"vcenter", v.vcenter},
          {"datacenter", v.datacenter}, {"cpus", v.cpus},         {"memory_mb", v.memory_mb},
          {"guest_os", v.guest_os},   {"power_state", v.power_state}, {"status", v.status},
          {"current_job_id", opt_json(v.current_job_id)}, {"created_at", v.created_at}};
}

json disk_json(const DiskRecord& d) {
  return {{"key", d.disk_key},          {"unit", d.unit},           {"label", d.label},
          {"capacity_bytes", d.capacity_bytes}, {"volume_id", opt_json(d.volume_id)},
          {"export", opt_json(d.export_name)}, {"change_id", opt_json(d.change_id)}};
}

json job_disk_json(const JobDiskRecord& d) {
  json phases = json::array();
  for (const auto& p : d.phases) phases.push_back({{"phase", enum_name(p.phase)}, {"seconds", p.seconds}});
  return {{"disk_key", d.disk_key}, {"unit", d.unit},           {"export", d.export_name}, {"phases", phases},
          {"status", d.status},     {"phase", d.phase},         {"bytes_done", d.bytes_done},
          {"bytes_total", d.bytes_total}, {"throughput_bps", d.throughput_bps}, {"eta_seconds", d.eta_seconds},
          {"change_id_base", opt_json(d.change_id_base)}, {"change_id", opt_json(d.change_id_new)},
          {"committed", d.committed}, {"error", opt_json(d.error)}};
}

json job_json(const JobRecord& j) {
  double pct = j.bytes_total > 0 ? 100.0 * static_cast<double>(j.bytes_done) / static_cast<double>(j.bytes_total) : 0;
  return {{"job_id", j.job_id},       {"vm_id", j.vm_id},         {"kind", j.kind},
          {"status", j.status},       {"phase", j.phase},         {"bytes_done", j.bytes_done},
          {"bytes_total", j.bytes_total}, {"percent", pct},       {"throughput_bps", j.throughput_bps},
          {"eta_seconds", j.eta_seconds}, {"error", opt_json(j.error)}, {"cancel_requested", j.cancel_requested},
          {"created_at", j.created_at}, {"updated_at", j.updated_at}, {"finished_at", opt_json(j.finished_at)}};
}

json job_progress_json(const JobRecord& job, const std::vector<JobDiskRecord>& disks) {
  json out = job_json(job);
  out["disks"] = json::array();
  for (const auto& d : disks) out["disks"].push_back(job_disk_json(d));
  return out;
}

json schedule_json(const ScheduleRecord& s) {
  return {{"vm_id", s.vm_id},
          {"interval_minutes", s.interval_minutes},
          {"enabled", s.enabled},
          {"next_run_at", s.enabled ? json(s.next_run_at) : json(nullptr)},
          {"last_run_at", s.last_run_at ? json(*s.last_run_at) : json(nullptr)},
          {"last_job_id", s.last_job_id ? json(*s.last_job_id) : json(nullptr)},
          {"last_result", s.last_result ? json(*s.last_result) : json(nullptr)},
          {"updated_at", s.updated_at}};
}

json boot_check_json(const BootCheckRecord& r, BootCheckView view) {
  json out = {{"job_id", r.job_id},
              {"started_by", r.started_by},
              {"booted", r.booted},
              {"reason", r.reason},
              {"conversion_seconds", r.conversion_seconds},
              {"boot_seconds", r.boot_seconds},
              {"finished_at", r.finished_at}};
  if (view == BootCheckView::Summary) return out;
  // details: what guest::to_json wrote (inspection, result); a row of an older or newer
  // OMA may lack parts of it, which then read as unknown, never as a failure.
  json details = json::parse(r.details, nullptr, false);
  if (!details.is_object()) details = json::object();
  const json result = details.value("result", json::object());
  const json inspection = details.value("inspection", json::object());
  out["inspection_seconds"] = r.inspection_seconds;
  out["accel"] = result.value("accel", "");
  out["converted"] = result.value("converted", false);
  out["timed_out"] = result.value("timed_out", false);
  json evidence = result.value("evidence", json());
  out["evidence"] = evidence.is_object() ? json{{"journal_written", evidence.value("journal_written", false)},
                                                {"target_reached", evidence.value("target_reached", false)},
                                                {"target", evidence.value("target", "")},
                                                {"detail", evidence.value("detail", "")}}
                                         : json(nullptr);
  std::string os = inspection.value("distro", "");
  const std::string version = inspection.value("version", "");
  if (!version.empty()) os += (os.empty() ? "" : " ") + version;
  out["os"] = os;
  out["console_tail"] = r.console_tail;
  out["screenshot_format"] = r.screenshot_format.empty() ? json(nullptr) : json(r.screenshot_format);
  out["started_at"] = r.started_at;
  if (view == BootCheckView::WithScreenshot) {
    out["vm_id"] = r.vm_id;
    out["screenshot_base64"] = r.screenshot_base64.empty() ? json(nullptr) : json(r.screenshot_base64);
  }
  return out;
}

namespace {

// A stored word the schema lists, else null (a row of a newer OMA, a VMA's new word).
json known_or_null(const std::string& value, std::initializer_list<const char*> known) {
  for (const char* k : known)
    if (value == k) return value;
  return nullptr;
}

}  // namespace

json inspection_json(const InspectionRecord& r) {
  return {{"vm_id", r.vm_id},
          {"job_id", r.job_id},
          {"started_by", r.started_by},
          {"os_found", r.os_found},
          {"os_family", r.os_family},
          {"distro", r.distro},
          {"version", r.version},
          {"product_name", r.product_name},
          {"osinfo", r.osinfo},
          {"root_device", r.root_device},
          {"boot_disk", r.boot_disk < 0 ? json(nullptr) : json(r.boot_disk)},
          {"boot_disk_key", r.boot_disk_key.empty() ? json(nullptr) : json(r.boot_disk_key)},
          {"firmware", known_or_null(r.firmware, {"bios", "uefi"})},
          {"vsphere_firmware", known_or_null(r.vsphere_firmware, {"bios", "efi"})},
          {"vsphere_secure_boot", r.vsphere_secure_boot},
          {"convertible", r.convertible},
          {"reason", r.reason},
          {"seconds", r.seconds},
          {"inspected_at", r.inspected_at}};
}

json guest_summary_json(const InspectionRecord& r) {
  std::string os = r.distro;
  if (!r.version.empty()) os += (os.empty() ? "" : " ") + r.version;
  return {{"os", os}, {"convertible", r.convertible}, {"reason", r.reason}, {"inspected_at", r.inspected_at}};
}

void add_pass_stats(json& vm, const VmPassStats& s) {
  vm["last_pass"] = s.last_pass ? json{{"job_id", s.last_pass->job_id},
                                       {"kind", s.last_pass->kind},
                                       {"status", s.last_pass->status},
                                       {"finished_at", s.last_pass->finished_at},
                                       {"bytes", s.last_pass->bytes},
                                       {"seconds", s.last_pass->seconds}}
                                : json(nullptr);
  vm["change_id_age_seconds"] = s.change_id_age_seconds ? json(*s.change_id_age_seconds) : json(nullptr);
  vm["ready_for_cutover"] = s.ready_for_cutover;
  vm["cutover_blockers"] = s.cutover_blockers;
  vm["predicted_downtime_seconds"] =
      s.predicted_downtime_seconds ? json(*s.predicted_downtime_seconds) : json(nullptr);
  vm["prediction_passes"] = s.incremental_passes_used;
}

json discovered_vm_json(const protocol::DiscoveredVm& v, bool managed) {
  json j = protocol::encode(v);
  j["managed"] = managed;
  j["blocked"] = !v.findings.empty();
  return j;
}

}  // namespace mk::oma::api
