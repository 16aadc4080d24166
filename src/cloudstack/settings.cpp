#include "cloudstack/settings.h"

#include <fmt/format.h>

#include <algorithm>

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

void check_required(const Settings& s, std::vector<std::string>& problems) {
  const std::pair<const char*, const std::string*> fields[] = {
      {"API URL", &s.api_url},           {"API key", &s.api_key},
      {"secret key", &s.secret_key},     {"zone", &s.zone_id},
      {"disk offering", &s.disk_offering_id}, {"service offering", &s.service_offering_id},
      {"template", &s.template_id},      {"OMA MAC address", &s.oma_mac}};
  for (const auto& [name, value] : fields) {
    if (value->empty()) problems.push_back(fmt::format("the {} is not set", name));
  }
  if (s.network_ids.empty()) problems.push_back("no network is set");
}

void check_inventory(const Client& c, const Settings& s, std::vector<std::string>& problems) {
  Json zone = find_one(c, "listZones", "zone", {{"id", s.zone_id}});
  if (zone.is_null()) {
    problems.push_back(fmt::format("zone {} does not exist", s.zone_id));
  } else if (zone.value("allocationstate", "Enabled") != "Enabled") {
    problems.push_back(fmt::format("zone {} ({}) is not enabled", s.zone_id,
                                   zone.value("name", "")));
  }
  Json disk = find_one(c, "listDiskOfferings", "diskoffering", {{"id", s.disk_offering_id}});
  if (disk.is_null()) {
    problems.push_back(fmt::format("disk offering {} does not exist", s.disk_offering_id));
  } else if (!disk.value("iscustomized", false)) {
    problems.push_back(fmt::format("disk offering {} ({}) has a fixed size; choose a custom-size "
                                   "offering so each volume matches its source disk",
                                   s.disk_offering_id, disk.value("name", "")));
  }
  if (find_one(c, "listServiceOfferings", "serviceoffering", {{"id", s.service_offering_id}})
          .is_null()) {
    problems.push_back(fmt::format("service offering {} does not exist", s.service_offering_id));
  }
  Json tmpl = find_one(c, "listTemplates", "template",
                       {{"id", s.template_id}, {"templatefilter", "executable"},
                        {"zoneid", s.zone_id}});
  if (tmpl.is_null()) {
    problems.push_back(fmt::format("template {} does not exist in zone {}", s.template_id,
                                   s.zone_id));
  } else if (!tmpl.value("isready", false)) {
    problems.push_back(fmt::format("template {} ({}) is not ready (status: {}); wait for it or "
                                   "choose another",
                                   s.template_id, tmpl.value("name", ""), tmpl.value("status", "")));
  }
  for (const auto& id : s.network_ids) {
    Json net = find_one(c, "listNetworks", "network", {{"id", id}});
    if (net.is_null()) {
      problems.push_back(fmt::format("network {} does not exist", id));
    } else if (net.value("zoneid", s.zone_id) != s.zone_id) {
      problems.push_back(fmt::format("network {} ({}) is not in zone {}", id,
                                     net.value("name", ""), s.zone_id));
    }
  }
}

// The OMA's VM: the one VM with a NIC of that MAC, and the account allowed to attach
// volumes to it.
std::string check_oma(const Client& c, const Settings& s, std::vector<std::string>& problems) {
  std::vector<Json> found;
  for (const auto& vm : c.list("listVirtualMachines", "virtualmachine", {{"listall", "true"}})) {
    for (const auto& nic : vm.value("nic", Json::array())) {
      if (mk::to_lower(nic.value("macaddress", "")) == mk::to_lower(s.oma_mac)) found.push_back(vm);
    }
  }
  if (found.size() != 1) {
    problems.push_back(found.empty()
                           ? fmt::format("no VM has a NIC with MAC {}: is this the OMA's MAC, and "
                                         "can this account see the OMA's VM?",
                                         s.oma_mac)
                           : fmt::format("{} VMs have a NIC with MAC {}", found.size(), s.oma_mac));
    return "";
  }
  const Json& oma = found[0];
  if (find_one(c, "listApis", "api", {{"name", "attachVolume"}}).is_null()) {
    problems.push_back("this account may not call attachVolume; give its role that permission");
  }
  bool same_account = false;
  for (const auto& a : c.list("listAccounts", "account")) {
    same_account |= a.value("name", "") == oma.value("account", "") &&
                    a.value("domainid", "") == oma.value("domainid", "");
  }
  if (!same_account) {
    problems.push_back(fmt::format("the OMA's VM {} belongs to account {}, which this API key "
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
          {"oma_mac", s.oma_mac}};
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
  return s;
}

ValidationReport validate_settings(const Settings& s, ClientOptions options) {
  ValidationReport report;
  check_required(s, report.problems);
  if (s.api_url.empty() || s.api_key.empty() || s.secret_key.empty()) return report;
  Client client(Endpoint{s.api_url, s.api_key, s.secret_key}, options);
  try {
    client.call("listZones", {{"available", "true"}});
  } catch (const ApiError& e) {
    report.problems.push_back(
        e.errorcode() == 401
            ? "CloudStack refused the API key and secret key (401): check both"
            : fmt::format("CloudStack answered the first call with an error: {}", e.what()));
    return report;
  } catch (const Error& e) {
    report.problems.push_back(fmt::format("cannot reach the CloudStack API: {}", e.what()));
    return report;
  }
  try {
    check_inventory(client, s, report.problems);
    if (!s.oma_mac.empty()) report.oma_vm_id = check_oma(client, s, report.problems);
  } catch (const Error& e) {
    report.problems.push_back(fmt::format("validation stopped: {}", e.what()));
  }
  return report;
}

}  // namespace mk::cloudstack
