// Settings (admin): the OMA's named settings, and the CloudStack settings of cutover.
#include <map>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Schema kSettingSchema{{
    {.name = "value", .max_length = 4096},
}};

// Settings the OMA knows; secrets are stored encrypted and never returned.
const std::map<std::string, bool> kSettings = {
    {"cloudstack.url", false},      {"cloudstack.api_key", true},  {"cloudstack.secret_key", true},
    {"cloudstack.zone_id", false},  {"vcenter.host", false},       {"vcenter.username", false},
    {"vcenter.password", true},     {"vma.url", false},
};

Field id_field(const char* name, bool required, const char* description) {
  return {.name = name, .required = required, .description = description, .max_length = 64, .check = id_check};
}

// PUT: the keys may be left out to keep the stored ones. Validate: everything optional,
// merged over the stored settings.
Schema cloudstack_schema(bool put) {
  return {{
      {.name = "api_url", .required = put, .description = "CloudStack API URL", .max_length = 1024,
       .check = url_check},
      {.name = "api_key", .required = false, .description = "API key (kept if left out)", .max_length = 512},
      {.name = "secret_key", .required = false, .description = "secret key (kept if left out; never returned)",
       .max_length = 512},
      id_field("zone_id", put, "zone"),
      id_field("disk_offering_id", put, "custom-size disk offering for the volumes"),
      id_field("service_offering_id", put, "service offering of migrated VMs"),
      id_field("template_id", put, "template whose root disk is replaced by the OS disk"),
      id_field("test_network_id", false, "network of test failovers"),
      {.name = "oma_mac", .required = put, .description = "the OMA VM's MAC address (finds its VM)",
       .max_length = 17, .check = mac_check},
  }};
}
const Schema kPutCloudStack = cloudstack_schema(true);
const Schema kValidateCloudStack = cloudstack_schema(false);

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
  routes.push_back({"GET", "/api/v1/settings", "List settings (secret values are never returned)", "admin", nullptr,
       [&config](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& st : config.list_settings())
           out.push_back(
               {{"name", st.name}, {"secret", st.encrypted}, {"value", st.encrypted ? json(nullptr) : json(st.value)}});
         return {200, {{"settings", out}}, ""};
       }});
  routes.push_back({"PUT", "/api/v1/settings/{name}", "Set a setting (secrets are encrypted at rest)", "admin", &kSettingSchema,
       [&config, &secrets](auto& req, const json& b, auto&) -> Reply {
         std::string name = req.param("name");
         auto it = kSettings.find(name);
         if (it == kSettings.end()) throw FieldError("name", "is not a setting the OMA knows");
         std::string value = b["value"];
         config.put_setting(name, it->second ? secrets.seal(value) : value, it->second);
         return {200, {{"name", name}, {"secret", it->second}}, ""};
       }});
  routes.push_back({"GET", "/api/v1/settings/cloudstack", "CloudStack settings (the keys are never returned)", "admin",
               nullptr, [&service](auto&, auto&, auto&) -> Reply { return {200, cloudstack_view(service.target()), ""}; }});
  routes.push_back({"PUT", "/api/v1/settings/cloudstack", "Save the CloudStack settings (the secret key sealed at rest)",
               "admin", &kPutCloudStack, [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = service.target();
                 t.save_settings(merged(t, b));
                 return {200, cloudstack_view(t), ""};
               }});
  routes.push_back({"POST", "/api/v1/settings/cloudstack/validate",
               "Check the CloudStack settings (stored, with the body's changes) against CloudStack", "admin",
               &kValidateCloudStack,
               [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = service.target();
                 auto report = t.validate(merged(t, b));
                 json problems = json::array();
                 for (size_t i = 0; i < report.problems.size(); ++i)
                   problems.push_back({{"field", report.fields[i]}, {"message", report.problems[i]}});
                 return {200, {{"ok", report.ok()}, {"problems", problems}}, ""};
               },
               true});
  return routes;
}

}  // namespace mk::oma::api
