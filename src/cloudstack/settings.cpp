#include "cloudstack/settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "common/text.h"

namespace mk::cloudstack {
namespace {

// The one item a list command returns for an id, or null; a CloudStack error (an id
// CloudStack rejects) counts as not found.
Json find_one(const Client& client, const std::string& command, const std::string& key,
              Params params) {
  try {
    Json reply = client.call(command, std::move(params));
    if (reply.contains(key) && !reply[key].empty()) return reply[key][0];
  } catch (const ApiError& e) {
    if (e.errorcode() == 401) throw;
  }
  return nullptr;
}

void check_required(const Settings& s, ValidationReport& r) {
  struct Required {
    const char* field;
    const char* name;
    const std::string* value;
  };
  const Required fields[] = {
      {"api_url", "API URL", &s.api_url},
      {"api_key", "API key", &s.api_key},
      {"secret_key", "secret key", &s.secret_key},
      {"zone_id", "zone", &s.zone_id},
      {"disk_offering_id", "disk offering", &s.disk_offering_id},
      {"service_offering_id", "service offering", &s.service_offering_id},
      {"template_id", "template", &s.template_id},
      {"oma_mac", "OMA MAC address", &s.oma_mac}};
  for (const auto& f : fields) {
    if (f.value->empty()) r.add(f.field, fmt::format("the {} is not set", f.name));
  }
  if (s.network_ids.empty()) r.add("network_ids", "no network is set");
}

void check_inventory(const Client& c, const Settings& s, ValidationReport& r) {
  Json zone = find_one(c, "listZones", "zone", {{"id", s.zone_id}});
  if (zone.is_null()) {
    r.add("zone_id", fmt::format("zone {} does not exist", s.zone_id));
  } else if (zone.value("allocationstate", "Enabled") != "Enabled") {
    r.add("zone_id", fmt::format("zone {} ({}) is not enabled", s.zone_id,
                                   zone.value("name", "")));
  }
  Json disk = find_one(c, "listDiskOfferings", "diskoffering", {{"id", s.disk_offering_id}});
  if (disk.is_null()) {
    r.add("disk_offering_id", fmt::format("disk offering {} does not exist", s.disk_offering_id));
  } else if (!disk.value("iscustomized", false)) {
    r.add("disk_offering_id", fmt::format("disk offering {} ({}) has a fixed size; choose a custom-size "
                                   "offering so each volume matches its source disk",
                                   s.disk_offering_id, disk.value("name", "")));
  }
  if (find_one(c, "listServiceOfferings", "serviceoffering", {{"id", s.service_offering_id}})
          .is_null()) {
    r.add("service_offering_id", fmt::format("service offering {} does not exist", s.service_offering_id));
  }
  Json tmpl = find_one(c, "listTemplates", "template",
                       {{"id", s.template_id}, {"templatefilter", "executable"},
                        {"zoneid", s.zone_id}});
  if (tmpl.is_null()) {
    r.add("template_id", fmt::format("template {} does not exist in zone {}", s.template_id,
                                   s.zone_id));
  } else if (!tmpl.value("isready", false)) {
    r.add("template_id", fmt::format("template {} ({}) is not ready (status: {}); wait for it or "
                                   "choose another",
                                   s.template_id, tmpl.value("name", ""), tmpl.value("status", "")));
  }
  for (const auto& id : s.network_ids) {
    Json net = find_one(c, "listNetworks", "network", {{"id", id}});
    if (net.is_null()) {
      r.add("network_ids", fmt::format("network {} does not exist", id));
    } else if (net.value("zoneid", s.zone_id) != s.zone_id) {
      r.add("network_ids", fmt::format("network {} ({}) is not in zone {}", id,
                                     net.value("name", ""), s.zone_id));
    }
  }
}

// The OMA's VM: the one VM with a NIC of that MAC, and the account allowed to attach
// volumes to it.
std::string check_oma(const Client& c, const Settings& s, ValidationReport& r) {
  std::vector<Json> found;
  for (const auto& vm : c.list("listVirtualMachines", "virtualmachine", {{"listall", "true"}})) {
    for (const auto& nic : vm.value("nic", Json::array())) {
      if (mk::to_lower(nic.value("macaddress", "")) == mk::to_lower(s.oma_mac)) found.push_back(vm);
    }
  }
  if (found.size() != 1) {
    r.add("oma_mac", found.empty()
                           ? fmt::format("no VM has a NIC with MAC {}: is this the OMA's MAC, and "
                                         "can this account see the OMA's VM?",
                                         s.oma_mac)
                           : fmt::format("{} VMs have a NIC with MAC {}", found.size(), s.oma_mac));
    return "";
  }
  const Json& oma = found[0];
  if (find_one(c, "listApis", "api", {{"name", "attachVolume"}}).is_null()) {
    r.add("api_key", "this account may not call attachVolume; give its role that permission");
  }
  bool same_account = false;
  for (const auto& a : c.list("listAccounts", "account")) {
    same_account |= a.value("name", "") == oma.value("account", "") &&
                    a.value("domainid", "") == oma.value("domainid", "");
  }
  if (!same_account) {
    r.add("api_key", fmt::format("the OMA's VM {} belongs to account {}, which this API key "
                                   "cannot act for: volumes it creates could not be attached",
                                   oma.value("id", ""), oma.value("account", "")));
  }
  return oma.value("id", "");
}

}  // namespace

Json settings_to_json(const Settings& s, const SecretTransform& seal) {
  return {{"api_url", s.api_url},
          {"api_key", s.api_key},
          {"secret_key_sealed", seal(s.secret_key)},
          {"zone_id", s.zone_id},
          {"disk_offering_id", s.disk_offering_id},
          {"service_offering_id", s.service_offering_id},
          {"template_id", s.template_id},
          {"network_ids", s.network_ids},
          {"oma_mac", s.oma_mac},
          {"test_network_id", s.test_network_id}};
}

Settings settings_from_json(const Json& j, const SecretTransform& open) {
  Settings s;
  s.api_url = j.value("api_url", "");
  s.api_key = j.value("api_key", "");
  std::string sealed = j.value("secret_key_sealed", "");
  if (!sealed.empty()) s.secret_key = open(sealed);
  s.zone_id = j.value("zone_id", "");
  s.disk_offering_id = j.value("disk_offering_id", "");
  s.service_offering_id = j.value("service_offering_id", "");
  s.template_id = j.value("template_id", "");
  s.network_ids = j.value("network_ids", std::vector<std::string>{});
  s.oma_mac = j.value("oma_mac", "");
  s.test_network_id = j.value("test_network_id", "");
  return s;
}

ValidationReport validate_settings(const Settings& s, ClientOptions options) {
  ValidationReport report;
  check_required(s, report);
  if (s.api_url.empty() || s.api_key.empty() || s.secret_key.empty()) return report;
  std::optional<Client> made;
  try {
    made.emplace(Endpoint{s.api_url, s.api_key, s.secret_key}, options);
  } catch (const UsageError& e) {
    report.add("api_url", e.what());
    return report;
  }
  const Client& client = *made;
  try {
    client.call("listZones", {{"available", "true"}});
  } catch (const ApiError& e) {
    report.add(
        e.errorcode() == 401 ? "secret_key" : "api_url",
        e.errorcode() == 401
            ? "CloudStack refused the API key and secret key (401): check both"
            : fmt::format("CloudStack answered the first call with an error: {}", e.what()));
    return report;
  } catch (const Error& e) {
    report.add("api_url", fmt::format("cannot reach the CloudStack API: {}", e.what()));
    return report;
  }
  try {
    check_inventory(client, s, report);
    if (!s.oma_mac.empty()) report.oma_vm_id = check_oma(client, s, report);
  } catch (const Error& e) {
    report.add("api_url", fmt::format("validation stopped: {}", e.what()));
  }
  return report;
}

}  // namespace mk::cloudstack
