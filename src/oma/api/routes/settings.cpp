// Settings (admin): the OMA's named settings, and the CloudStack settings of cutover.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "cloudstack/guest_fit.h"
#include "oma/db/sealed_values.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kSettingsTag{"Settings", "The OMA's settings, and the CloudStack settings of cutover (admin)"};

const Schema kSettingSchema{{
    {.name = "value", .description = "the new value (secrets are sealed at rest)", .max_length = 4096,
     .example = "vcenter.example.local"},
}, "SettingValue", "a setting's new value"};

// Settings the OMA knows; secrets are stored encrypted and never returned.
const std::map<std::string, bool> kSettings = {
    {"cloudstack.url", false},      {"cloudstack.api_key", true},  {"cloudstack.secret_key", true},
    {"cloudstack.zone_id", false},  {"vcenter.host", false},       {"vcenter.username", false},
    {"vcenter.password", true},     {"vma.url", false},
    {kBootCheckAfterIncremental, false}, {kInspectionAfterPass, false},
};

// Settings whose values the OMA reads: only these values are accepted.
const std::map<std::string, std::vector<std::string>> kSettingValues = {
    {kBootCheckAfterIncremental, {"true", "false"}},
    {kInspectionAfterPass, {"true", "false"}},
};

std::vector<std::string> setting_names() {
  std::vector<std::string> names;
  for (const auto& [name, secret] : kSettings) names.push_back(name);
  return names;
}

Field id_field(const char* name, bool required, const char* description) {
  return {.name = name, .required = required, .description = description, .max_length = 64, .check = id_check,
          .example = "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e", .pattern = kCloudStackIdPattern};
}

// PUT: the keys may be left out to keep the stored ones. Validate: everything optional,
// merged over the stored settings.
Schema cloudstack_schema(bool put) {
  return {{
      {.name = "api_url", .required = put, .description = "CloudStack API URL", .max_length = 1024,
       .check = url_check, .example = "https://cloud.example.local:8080/client/api", .pattern = kUrlPattern},
      {.name = "api_key", .required = false, .description = "API key (kept if left out)", .max_length = 512},
      {.name = "secret_key", .required = false, .description = "secret key (kept if left out; never returned)",
       .max_length = 512},
      id_field("zone_id", put, "zone"),
      id_field("disk_offering_id", put, "custom-size disk offering for the volumes"),
      id_field("service_offering_id", put, "service offering of migrated VMs"),
      id_field("template_id", put, "template whose root disk is replaced by the OS disk"),
      {.name = "os_templates", .type = Field::Type::Object, .required = false,
       .description = "a template per OS family or distro (\"windows\", \"linux\", \"debian\", ...: as inspection "
                      "reports them); an inspected guest gets its distro's, else its family's, else template_id; "
                      "replaces the stored map when given",
       .example = json{{"windows", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2f"}}},
      id_field("test_network_id", false, "network of test failovers"),
      {.name = "oma_mac", .required = put, .description = "the OMA VM's MAC address (finds its VM)",
       .max_length = 17, .check = mac_check, .example = "02:00:4c:4f:4f:50", .pattern = kMacPattern},
  }, put ? "CloudStackSettingsUpdate" : "CloudStackSettingsCheck",
     put ? "the CloudStack settings to save (keys left out are kept)"
         : "changes to check over the stored CloudStack settings (nothing is saved)"};
}
const Schema kPutCloudStack = cloudstack_schema(true);
const Schema kValidateCloudStack = cloudstack_schema(false);

const Schema kSetting{{
    text_field("name", "the setting", "vcenter.host"),
    bool_field("secret", "a secret: sealed at rest, its value never returned", false),
    nullable(text_field("value", "its value (null for secrets and unset settings)", "vcenter.example.local")),
}, "Setting", "a setting"};
const Schema kSettingList{{array_field("settings", "the stored settings", &kSetting)}};
const Schema kSettingSaved{{
    text_field("name", "the setting", "vcenter.host"),
    bool_field("secret", "it is a secret (sealed at rest)", false),
}};

const Schema kCloudStackConfigured{{
    bool_field("configured", "the settings are saved: true"),
    text_field("api_url", "CloudStack API URL", "https://cloud.example.local:8080/client/api"),
    bool_field("api_key_set", "an API key is stored"),
    bool_field("secret_key_set", "a secret key is stored (never returned)"),
    text_field("zone_id", "zone", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    text_field("disk_offering_id", "custom-size disk offering for the volumes", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    text_field("service_offering_id", "service offering of migrated VMs", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    text_field("template_id", "template whose root disk is replaced by the OS disk",
               "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    {.name = "os_templates", .type = Field::Type::Object, .required = true,
     .description = "the template per OS family or distro (may be empty)",
     .example = json{{"windows", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2f"}}},
    text_field("test_network_id", "network of test failovers (empty: none)", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    text_field("oma_mac", "the OMA VM's MAC address", "02:00:4c:4f:4f:50"),
    uuid_field("oma_id", "this OMA's id (its volumes in CloudStack carry it)"),
}, "CloudStackSettings", "the saved CloudStack settings (the keys are never returned)"};
const Schema kCloudStackUnconfigured{{
    bool_field("configured", "no settings are saved yet: false", false),
}, "CloudStackUnconfigured", "no CloudStack settings yet"};
const Schema kCloudStackView{.name = "CloudStackSettingsView",
                             .description = "the CloudStack settings, or that there are none",
                             .one_of = {&kCloudStackConfigured, &kCloudStackUnconfigured}};

const Schema kProblem{{
    text_field("field", "the setting at fault", "zone_id"),
    text_field("message", "what CloudStack said and what to do", "no zone 8d5b7c1e-... in this CloudStack"),
}, "SettingsProblem", "a problem with the CloudStack settings"};
const Schema kValidation{{
    bool_field("ok", "CloudStack accepts the settings"),
    array_field("problems", "what does not check out", &kProblem),
}, "CloudStackSettingsReport", "what CloudStack says of the settings"};

cloudstack::Settings merged(CloudStackTarget& target, const json& b) {
  cloudstack::Settings s = target.settings().value_or(cloudstack::Settings{});
  auto set = [&](const char* key, std::string& field) {
    if (b.contains(key) && b[key].is_string()) field = b[key].get<std::string>();
  };
  set("api_url", s.api_url);
  set("api_key", s.api_key);
  set("secret_key", s.secret_key);
  set("zone_id", s.zone_id);
  set("disk_offering_id", s.disk_offering_id);
  set("service_offering_id", s.service_offering_id);
  set("template_id", s.template_id);
  set("test_network_id", s.test_network_id);
  set("oma_mac", s.oma_mac);
  if (b.contains("os_templates")) {
    // The schema says "an object"; its keys and values are checked here.
    s.os_templates.clear();
    for (const auto& [key, id] : b["os_templates"].items()) {
      const std::string path = "os_templates." + key;
      if (!cloudstack::is_os_template_key(key)) {
        throw schema::FieldError(path, "\"" + key.substr(0, 64) +
                                           "\" is no OS family or distro that inspection reports: use one such as "
                                           "\"linux\", \"windows\", \"debian\", \"ubuntu\", \"rhel\"");
      }
      if (!id.is_string()) throw schema::FieldError(path, "must be a template id (text)");
      id_check(id.get<std::string>(), path);
      s.os_templates[key] = id.get<std::string>();
    }
  }
  return s;
}

json cloudstack_view(CloudStackTarget& target) {
  auto s = target.settings();
  if (!s) return {{"configured", false}};
  return {{"configured", true},
          {"api_url", s->api_url},
          {"api_key_set", !s->api_key.empty()},
          {"secret_key_set", !s->secret_key.empty()},
          {"zone_id", s->zone_id},
          {"disk_offering_id", s->disk_offering_id},
          {"service_offering_id", s->service_offering_id},
          {"template_id", s->template_id},
          {"os_templates", s->os_templates},
          {"test_network_id", s->test_network_id},
          {"oma_mac", s->oma_mac},
          {"oma_id", target.oma_id()}};
}

}  // namespace

std::vector<Route> settings_routes(const Services& s) {
  ConfigRepository& config = s.repos.config;
  SecretBox& secrets = s.secrets;
  CutoverService& service = s.cutover;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/settings",
      .operation_id = "listSettings",
      .tag = &kSettingsTag,
      .summary = "List settings (secret values are never returned)",
      .description = "Every stored setting with its value, except secrets, whose values are sealed at rest and "
                     "never returned.",
      .role = "admin",
      .responses = {{200, "the settings", &kSettingList}},
      .handler = [&config](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& st : config.list_settings())
           out.push_back(
               {{"name", st.name}, {"secret", st.encrypted}, {"value", st.encrypted ? json(nullptr) : json(st.value)}});
         return {200, {{"settings", out}}, ""};
       }});
  routes.push_back({
      .method = "PUT",
      .path = "/api/v1/settings/{name}",
      .operation_id = "putSetting",
      .tag = &kSettingsTag,
      .summary = "Set a setting (secrets are encrypted at rest)",
      .description = "Stores one of the settings the OMA knows; secrets (API and secret keys, passwords) are "
                     "sealed with the OMA's key before they are stored. boot_check.after_incremental (\"true\" or "
                     "\"false\", off when unset) starts a boot check after each completed incremental pass. "
                     "inspection.after_pass (\"true\" or \"false\", off when unset; only when the OMA converts "
                     "guests) inspects a VM after its full passes, and after an incremental one if it has not "
                     "been inspected yet.",
      .role = "admin",
      .params = {{.name = "name", .description = "the setting", .one_of = setting_names()}},
      .body = &kSettingSchema,
      .responses = {{200, "the setting, stored", &kSettingSaved}},
      .handler = [&config, &secrets](auto& req, const json& b, auto&) -> Reply {
         std::string name = req.param("name");
         bool secret = kSettings.at(name);
         std::string value = b["value"];
         auto allowed = kSettingValues.find(name);
         if (allowed != kSettingValues.end() &&
             std::find(allowed->second.begin(), allowed->second.end(), value) == allowed->second.end()) {
           throw FieldError("value", fmt::format("{} must be one of: {}", name, fmt::join(allowed->second, ", ")));
         }
         config.put_setting(name, secret ? secrets.seal(value, seal_binding(kSettingPurpose, name)) : value, secret);
         return {200, {{"name", name}, {"secret", secret}}, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/settings/cloudstack",
      .operation_id = "getCloudStackSettings",
      .tag = &kSettingsTag,
      .summary = "CloudStack settings (the keys are never returned)",
      .description = "The CloudStack settings cutover and test failover use (API URL, zone, offerings, template, "
                     "test network, the OMA's MAC), whether the keys are set, and this OMA's id.",
      .role = "admin",
      .responses = {{200, "the settings, or that there are none", &kCloudStackView}},
      .handler = [&service](auto&, auto&, auto&) -> Reply { return {200, cloudstack_view(service.target()), ""}; }});
  routes.push_back({
      .method = "PUT",
      .path = "/api/v1/settings/cloudstack",
      .operation_id = "putCloudStackSettings",
      .tag = &kSettingsTag,
      .summary = "Save the CloudStack settings (the secret key sealed at rest)",
      .description = "Saves the CloudStack settings; keys left out keep their stored values. Check them first "
                     "with POST /api/v1/settings/cloudstack/validate.",
      .role = "admin",
      .body = &kPutCloudStack,
      .responses = {{200, "the settings, saved", &kCloudStackView}},
      .handler = [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = service.target();
                 t.save_settings(merged(t, b));
                 return {200, cloudstack_view(t), ""};
               }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/settings/cloudstack/validate",
      .operation_id = "validateCloudStackSettings",
      .tag = &kSettingsTag,
      .summary = "Check the CloudStack settings (stored, with the body's changes) against CloudStack",
      .description = "Asks CloudStack whether the stored settings, with the body's changes over them, work: the "
                     "keys sign, and the zone, offerings, template, network and the OMA's VM exist. Saves nothing.",
      .role = "admin",
      .body = &kValidateCloudStack,
      .body_optional = true,
      .responses = {{200, "what CloudStack says", &kValidation}},
      .handler = [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = service.target();
                 auto report = t.validate(merged(t, b));
                 json problems = json::array();
                 for (size_t i = 0; i < report.problems.size(); ++i)
                   problems.push_back({{"field", report.fields[i]}, {"message", report.problems[i]}});
                 return {200, {{"ok", report.ok()}, {"problems", problems}}, ""};
               }});
  return routes;
}

}  // namespace mk::oma::api
