#include "cloudstack/settings.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>

#include "cloudstack/guest_fit.h"
#include "common/json_schema.h"
#include "common/text.h"

namespace mk::cloudstack {
namespace {

// The one item a list command returns for an id, or null; a CloudStack error (an id
// CloudStack rejects) counts as not found.
Json find_one(const Client& client, const std::string& command, const std::string& key,
              Params params) {
  try {
    Json reply = client.call(command, std::move(params));
    return json_first(reply, key.c_str());
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
  } else if (std::string state = json_text(zone, "allocationstate"); !state.empty() && state != "Enabled") {
    r.add("zone_id", fmt::format("zone {} ({}) is not enabled", s.zone_id,
                                   json_text(zone, "name")));
  }
  Json disk = find_one(c, "listDiskOfferings", "diskoffering", {{"id", s.disk_offering_id}});
  if (disk.is_null()) {
    r.add("disk_offering_id", fmt::format("disk offering {} does not exist", s.disk_offering_id));
  } else if (!json_bool(disk, "iscustomized", false)) {
    r.add("disk_offering_id", fmt::format("disk offering {} ({}) has a fixed size; choose a custom-size "
                                   "offering so each volume matches its source disk",
                                   s.disk_offering_id, json_text(disk, "name")));
  }
  if (find_one(c, "listServiceOfferings", "serviceoffering", {{"id", s.service_offering_id}})
          .is_null()) {
    r.add("service_offering_id", fmt::format("service offering {} does not exist", s.service_offering_id));
  }
  auto check_template = [&](const std::string& field, const std::string& id) {
    Json tmpl = find_one(c, "listTemplates", "template",
                         {{"id", id}, {"templatefilter", "executable"}, {"zoneid", s.zone_id}});
    if (tmpl.is_null()) {
      r.add(field, fmt::format("template {} does not exist in zone {}", id, s.zone_id));
    } else if (!json_bool(tmpl, "isready", false)) {
      r.add(field, fmt::format("template {} ({}) is not ready (status: {}); wait for it or "
                               "choose another",
                               id, json_text(tmpl, "name"), json_text(tmpl, "status")));
    }
  };
  check_template("template_id", s.template_id);
  for (const auto& [key, id] : s.os_templates) {
    const std::string field = "os_templates." + key;
    if (!is_os_template_key(key)) {
      r.add(field, fmt::format("\"{}\" is no OS family or distro that inspection reports: use one such as "
                               "\"linux\", \"windows\", \"debian\", \"ubuntu\", \"rhel\"",
                               key));
    } else if (id.empty()) {
      r.add(field, fmt::format("no template is set for \"{}\"", key));
    } else {
      check_template(field, id);
    }
  }
  for (const auto& id : s.network_ids) {
    Json net = find_one(c, "listNetworks", "network", {{"id", id}});
    if (net.is_null()) {
      r.add("network_ids", fmt::format("network {} does not exist", id));
    } else if (std::string zone_id = json_text(net, "zoneid"); !zone_id.empty() && zone_id != s.zone_id) {
      r.add("network_ids", fmt::format("network {} ({}) is not in zone {}", id,
                                     json_text(net, "name"), s.zone_id));
    }
  }
}

// The OMA's VM: the one VM with a NIC of that MAC, and the account allowed to attach
// volumes to it.
std::string check_oma(const Client& c, const Settings& s, ValidationReport& r) {
  std::vector<Json> found;
  for (const auto& vm : c.list("listVirtualMachines", "virtualmachine", {{"listall", "true"}})) {
    for (const auto& nic : json_array(vm, "nic")) {
      if (mk::to_lower(json_text(nic, "macaddress")) == mk::to_lower(s.oma_mac)) found.push_back(vm);
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
    same_account |= json_text(a, "name") == json_text(oma, "account") &&
                    json_text(a, "domainid") == json_text(oma, "domainid");
  }
  if (!same_account) {
    r.add("api_key", fmt::format("the OMA's VM {} belongs to account {}, which this API key "
                                   "cannot act for: volumes it creates could not be attached",
                                   json_text(oma, "id"), json_text(oma, "account")));
  }
  return json_text(oma, "id");
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
          {"os_templates", s.os_templates},
          {"network_ids", s.network_ids},
          {"oma_mac", s.oma_mac},
          {"test_network_id", s.test_network_id}};
}

Settings settings_from_json(const Json& j, const SecretTransform& open) {
  // The OMA wrote this row; a hand-edited or damaged one says so rather than throwing
  // nlohmann's type errors.
  auto text = [&](const char* key) {
    if (j.contains(key) && !j.at(key).is_string()) {
      throw Error(fmt::format("the stored CloudStack settings are damaged (\"{}\" is not text): save them again "
                              "(PUT /api/v1/settings/cloudstack)",
                              key));
    }
    return json_text(j, key);
  };
  if (!j.is_object()) {
    throw Error("the stored CloudStack settings are damaged (not a JSON object): save them again "
                "(PUT /api/v1/settings/cloudstack)");
  }
  Settings s;
  s.api_url = text("api_url");
  s.api_key = text("api_key");
  std::string sealed = text("secret_key_sealed");
  if (!sealed.empty()) s.secret_key = open(sealed);
  s.zone_id = text("zone_id");
  s.disk_offering_id = text("disk_offering_id");
  s.service_offering_id = text("service_offering_id");
  s.template_id = text("template_id");
  if (j.contains("os_templates")) {
    const Json& t = j.at("os_templates");
    if (!t.is_object()) {
      throw Error("the stored CloudStack settings are damaged (\"os_templates\" is not an object): save them again "
                  "(PUT /api/v1/settings/cloudstack)");
    }
    for (const auto& [key, id] : t.items()) {
      if (!id.is_string()) {
        throw Error("the stored CloudStack settings are damaged (an OS template id is not text): save them again "
                    "(PUT /api/v1/settings/cloudstack)");
      }
      s.os_templates[key] = id.get<std::string>();
    }
  }
  if (j.contains("network_ids") && !j.at("network_ids").is_array()) {
    throw Error("the stored CloudStack settings are damaged (\"network_ids\" is not a list): save them again "
                "(PUT /api/v1/settings/cloudstack)");
  }
  for (const auto& id : json_array(j, "network_ids")) {
    if (!id.is_string()) {
      throw Error("the stored CloudStack settings are damaged (a network id is not text): save them again "
                  "(PUT /api/v1/settings/cloudstack)");
    }
    s.network_ids.push_back(id.get<std::string>());
  }
  s.oma_mac = text("oma_mac");
  s.test_network_id = text("test_network_id");
  return s;
}

void check_settings(const Settings& s, const ClientOptions& options) {
  if (s.api_url.empty()) return;  // required-ness is the schema's and validate_settings()'s
  try {
    check_api_url(s.api_url, options.allow_insecure_http);
  } catch (const UsageError& e) {
    throw schema::FieldError("api_url", e.what());
  }
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
