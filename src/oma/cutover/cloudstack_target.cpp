#include "oma/cutover/cloudstack_target.h"

#include <fmt/format.h>

#include <algorithm>

#include "cloudstack/preflight.h"
#include "common/error.h"
#include "oma/db/sealed_values.h"
#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {
namespace {

constexpr const char* kSettings = "cloudstack";
constexpr const char* kMappings = "cloudstack.network_mappings";
constexpr const char* kOmaId = "oma.id";
// The secret key is the "secret_key_sealed" field of the JSON setting (sealed_values.h).
const std::string kSecretKeyBinding = seal_binding(kSettingPurpose, std::string(kSettings) + ".secret_key_sealed");

}  // namespace

CloudStackTarget::CloudStackTarget(ConfigRepository& config, SecretBox& secrets, CloudStackOptions options)
    : config_(config), secrets_(secrets), options_(std::move(options)) {}

std::string CloudStackTarget::oma_id() {
  std::lock_guard lock(mu_);
  if (auto v = config_.get_setting(kOmaId)) return v->value;
  std::string id = new_uuid();
  config_.put_setting(kOmaId, id, false);
  return id;
}

std::optional<cloudstack::Settings> CloudStackTarget::settings() {
  auto stored = config_.get_setting(kSettings);
  if (!stored) return std::nullopt;
  auto j = cloudstack::Json::parse(stored->value, nullptr, false);
  if (j.is_discarded()) throw Error("the stored CloudStack settings are not JSON: save them again");
  return cloudstack::settings_from_json(j, [this](const std::string& s) { return secrets_.open(s, kSecretKeyBinding); });
}

void CloudStackTarget::save_settings(cloudstack::Settings s) {
  cloudstack::check_settings(s, options_.client);  // an http:// URL is refused now, not at cutover
  if (s.secret_key.empty()) {
    auto old = settings();
    if (old) s.secret_key = old->secret_key;
  }
  auto j = cloudstack::settings_to_json(
      s, [this](const std::string& p) { return p.empty() ? p : secrets_.seal(p, kSecretKeyBinding); });
  config_.put_setting(kSettings, j.dump(), true);
}

std::vector<NetworkMappingRow> CloudStackTarget::network_mappings() {
  std::vector<NetworkMappingRow> out;
  auto stored = config_.get_setting(kMappings);
  if (!stored) return out;
  auto j = cloudstack::Json::parse(stored->value, nullptr, false);
  if (!j.is_array()) throw Error("the stored network mappings are not a JSON array: save them again");
  for (const auto& m : j) {
    out.push_back({m.value("source_network", ""), m.value("target_network_id", ""), m.value("keep_mac", true)});
  }
  return out;
}

void CloudStackTarget::save_network_mappings(const std::vector<NetworkMappingRow>& rows) {
  cloudstack::Json j = cloudstack::Json::array();
  for (const auto& r : rows) {
    j.push_back({{"source_network", r.source_network}, {"target_network_id", r.target_network_id},
                 {"keep_mac", r.keep_mac}});
  }
  config_.put_setting(kMappings, j.dump(), false);
}

cloudstack::ValidationReport CloudStackTarget::validate(const cloudstack::Settings& given) {
  cloudstack::Settings s = given;
  s.network_ids.clear();
  for (const auto& m : network_mappings()) {
    if (std::find(s.network_ids.begin(), s.network_ids.end(), m.target_network_id) == s.network_ids.end())
      s.network_ids.push_back(m.target_network_id);
  }
  if (!s.test_network_id.empty()) s.network_ids.push_back(s.test_network_id);
  cloudstack::ValidationReport r = cloudstack::validate_settings(s, options_.client);
  // Networks come from the mapping table and the test network: name the right one.
  for (size_t i = 0; i < r.fields.size(); ++i) {
    if (r.fields[i] != "network_ids") continue;
    bool test = !s.test_network_id.empty() && r.problems[i].find(s.test_network_id) != std::string::npos;
    r.fields[i] = test ? "test_network_id" : "network_mappings";
    if (r.problems[i] == "no network is set") {
      r.problems[i] = "no network is set: add network mappings (PUT /api/v1/network-mappings) or a test network";
    }
  }
  return r;
}

std::shared_ptr<const CloudStackSession> CloudStackTarget::session() {
  auto stored = config_.get_setting(kSettings);
  if (!stored) {
    throw UsageError("CloudStack is not configured: save its settings first (PUT /api/v1/settings/cloudstack)");
  }
  auto mappings = config_.get_setting(kMappings);
  std::string key = stored->value + "\n" + (mappings ? mappings->value : "");
  {
    std::lock_guard lock(mu_);
    if (cached_ && cached_key_ == key) return cached_;
  }
  cloudstack::Settings s = *settings();
  cloudstack::ValidationReport report = validate(s);
  std::string problems;
  for (size_t i = 0; i < report.problems.size(); ++i) {
    // Mappings are checked by each cutover against the VM's own networks.
    if (report.fields[i] == "network_mappings" || report.fields[i] == "test_network_id") continue;
    problems += "\n  - " + report.fields[i] + ": " + report.problems[i];
  }
  if (!problems.empty() || (report.oma_vm_id.empty() && options_.oma_vm_id.empty())) {
    throw UsageError("the CloudStack settings do not check out (POST /api/v1/settings/cloudstack/validate):" +
                     (problems.empty() ? std::string("\n  - the OMA's VM was not found") : problems));
  }
  auto session = std::make_shared<CloudStackSession>();
  session->client = std::make_unique<cloudstack::Client>(
      cloudstack::Endpoint{s.api_url, s.api_key, s.secret_key}, options_.client);
  cloudstack::VolumesConfig vc;
  vc.oma_id = oma_id();
  vc.oma_vm_id = options_.oma_vm_id.empty() ? report.oma_vm_id : options_.oma_vm_id;
  vc.zone_id = s.zone_id;
  vc.disk_offering_id = s.disk_offering_id;
  vc.by_id_dir = options_.by_id_dir;
  vc.device_timeout = options_.device_timeout;
  session->volumes = std::make_unique<cloudstack::CloudStackVolumes>(*session->client, vc);
  session->target.zone_id = s.zone_id;
  session->target.service_offering_id = s.service_offering_id;
  session->target.template_id = s.template_id;
  session->target.os_templates = s.os_templates;
  for (const auto& m : network_mappings()) session->target.networks[m.source_network] = {m.target_network_id, m.keep_mac};
  session->test_network_id = s.test_network_id;
  std::lock_guard lock(mu_);
  cached_key_ = key;
  cached_ = session;
  return session;
}

cloudstack::SourceVm cloudstack_source_vm(VmRepository& vms, StorageRepository& storage, const VmRecord& vm,
                                          bool need_volumes) {
  cloudstack::SourceVm out;
  out.vm_uuid = vm.vm_id;
  out.name = vm.name;
  out.cpus = static_cast<int>(vm.cpus);
  out.memory_mib = static_cast<int>(vm.memory_mb);
  for (const auto& n : vms.list_nics(vm.vm_id)) out.nics.push_back({n.network, n.mac});
  auto disks = vms.list_disks(vm.vm_id);  // in unit order
  for (size_t i = 0; i < disks.size(); ++i) {
    const auto& d = disks[i];
    cloudstack::SourceDisk sd;
    sd.disk = {vm.vm_id, d.disk_key, static_cast<uint64_t>(d.capacity_bytes)};
    sd.unit = static_cast<int>(d.unit);
    sd.os_disk = i == 0;
    auto volume = storage.find_volume(vm.vm_id, d.disk_key);
    if (volume) sd.volume_id = volume->volume_id;
    if (need_volumes && volume && volume->backend != "cloudstack") {
      throw UsageError(fmt::format("VM {} disk {}: its volume {} is on the {} backend, not a CloudStack volume",
                                   vm.vm_id, d.disk_key, volume->volume_id, volume->backend));
    }
    out.disks.push_back(sd);
  }
  return out;
}

TargetReport CloudStackChecks::check(const std::string& vm_id) {
  VmRecord vm = vms_.get_vm(vm_id);
  auto session = target_.session();
  const cloudstack::Client& client = *session->client;
  const std::string& oma_vm = session->volumes->config().oma_vm_id;
  cloudstack::CloudLimits limits = cloudstack::read_limits(client, oma_vm);
  TargetReport report;
  for (const auto& f : cloudstack::check_target(client, limits, session->target,
                                                cloudstack_source_vm(vms_, storage_, vm, false), oma_vm)) {
    std::optional<protocol::DiskKey> key;
    if (!f.disk_key.empty()) key = protocol::DiskKey::parse(f.disk_key);
    protocol::PreflightFinding p{f.code, key, f.problem, f.remedy, fmt::format("VM {}: {}", vm.name, f.text())};
    (!f.blocking ? report.notes : f.cutover_only ? report.cutover : report.blocking).push_back(std::move(p));
  }
  return report;
}

VolumeSlots CloudStackChecks::volume_slots(const std::string& vm_id) {
  auto session = target_.session();
  const cloudstack::Client& client = *session->client;
  const std::string& oma_vm = session->volumes->config().oma_vm_id;
  cloudstack::CloudLimits limits = cloudstack::read_limits(client, oma_vm);
  std::vector<std::string> attached = cloudstack::attached_data_volume_ids(client, oma_vm);
  VolumeSlots slots;
  for (const auto& d : vms_.list_disks(vm_id)) {
    auto v = storage_.find_volume(vm_id, d.disk_key);
    slots.needed += !v || std::find(attached.begin(), attached.end(), v->volume_id) == attached.end();
  }
  // A VM in test failover has its volumes on the test VM; its cleanup brings them back to
  // the OMA's VM, so their slots stay taken while they are away.
  int away = 0;
  for (const auto& v : storage_.list_volumes()) {
    if (v.vm_id == vm_id || std::find(attached.begin(), attached.end(), v.volume_id) != attached.end()) continue;
    away += vms_.find_failover(v.vm_id, FailoverKind::TestFailover).has_value();
  }
  slots.free = std::max(0, limits.max_data_volumes - static_cast<int>(attached.size()) - away);
  slots.limit = fmt::format("{} allows {} data volumes per VM{}; {} are attached to the OMA's VM {}{}",
                            limits.hypervisor, limits.max_data_volumes,
                            limits.max_data_volumes_known ? "" : " (the default: this API key cannot read the limit)",
                            attached.size(), oma_vm,
                            away ? fmt::format(", {} more come back after test failovers", away) : "");
  return slots;
}

}  // namespace mk::oma
