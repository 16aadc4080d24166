#include "oma/cutover/cutover_routes.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <set>

#include "oma/errors.h"
#include "oma/names.h"

namespace mk::oma {
namespace {

using api::Field;
using api::FieldError;
using api::Reply;
using api::Route;
using api::Schema;
using nlohmann::json;
using Type = Field::Type;

// CloudStack ids: UUIDs in practice; letters, digits and '-' are all an id may hold.
void id_check(const std::string& v, const std::string& path) {
  bool ok = !v.empty() && std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
  if (!ok) throw FieldError(path, "must be a CloudStack id (letters, digits and '-')");
}
void url_check(const std::string& v, const std::string& path) {
  if (v.rfind("http://", 0) != 0 && v.rfind("https://", 0) != 0)
    throw FieldError(path, "must be an http:// or https:// URL, like https://cloud.example:8080/client/api");
}
void mac_check(const std::string& v, const std::string& path) {
  if (!is_mac_address(v)) throw FieldError(path, "must be a MAC address like 00:50:56:aa:bb:cc");
}

Field id_field(const char* name, bool required, const char* description) {
  return {.name = name, .required = required, .description = description, .max_length = 64, .check = id_check};
}

// PUT: the keys may be left out to keep the stored ones. Validate: everything optional,
// merged over the stored settings.
Schema settings_schema(bool put) {
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
const Schema kPutSettings = settings_schema(true);
const Schema kValidateSettings = settings_schema(false);

const Schema kMapping{{
    {.name = "source_network", .description = "VMware network (port group) name", .max_length = 255},
    id_field("target_network_id", true, "CloudStack network"),
    {.name = "keep_mac", .type = Type::Boolean, .required = false,
     .description = "the network accepts the source NIC's MAC (default true)"},
}};
const Schema kMappings{{
    {.name = "mappings", .type = Type::Array, .max_length = 1024, .items = &kMapping},
}};

const Schema kCutover{{
    {.name = "shutdown_timeout_seconds", .type = Type::Integer, .required = false,
     .description = "guest shutdown time before a power off (default 300)", .min = 1, .max = 86400},
}};

std::string vm_param(const httplib::Request& req) {
  std::string v = req.matches.size() > 1 ? req.matches[1].str() : "";
  if (!is_uuid(v)) throw FieldError("vm_id", "must be a lowercase UUID in the path");
  return v;
}

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

CloudStackTarget& need_target(CutoverService& service) { return service.target(); }

json settings_view(CloudStackTarget& target) {
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

json mappings_view(CloudStackTarget& target) {
  json out = json::array();
  for (const auto& m : target.network_mappings()) {
    out.push_back({{"source_network", m.source_network}, {"target_network_id", m.target_network_id},
                   {"keep_mac", m.keep_mac}});
  }
  return {{"mappings", out}};
}

}  // namespace

std::vector<Route> cutover_routes(CutoverService& service, JobRepository& jobs) {
  std::vector<Route> r;
  auto job_reply = [&jobs](const std::string& id) -> Reply {
    return {202, {{"job_id", id}, {"status", jobs.get_job(id).status}}, ""};
  };
  r.push_back({"POST", "/api/v1/vms/{vm_id}/cutover",
               "Cut a replicated VM over: final pass with the source shut down, then the VM built in CloudStack",
               "operator", &kCutover,
               [&service, job_reply](auto& req, const json& b, auto&) -> Reply {
                 return job_reply(service.start_cutover(vm_param(req), b.value("shutdown_timeout_seconds", 300)));
               },
               true});
  r.push_back({"POST", "/api/v1/vms/{vm_id}/test-failover",
               "Boot a copy of a replicated VM on the test network; the source keeps running", "operator", nullptr,
               [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_test_failover(vm_param(req)));
               }});
  r.push_back({"POST", "/api/v1/vms/{vm_id}/test-failover/cleanup",
               "Destroy the test VM, revert and delete the snapshots, give the volumes back to replication",
               "operator", nullptr, [&service, job_reply](auto& req, auto&, auto&) -> Reply {
                 return job_reply(service.start_test_failover_cleanup(vm_param(req)));
               }});
  r.push_back({"GET", "/api/v1/settings/cloudstack", "CloudStack settings (the keys are never returned)", "admin",
               nullptr, [&service](auto&, auto&, auto&) -> Reply { return {200, settings_view(need_target(service)), ""}; }});
  r.push_back({"PUT", "/api/v1/settings/cloudstack", "Save the CloudStack settings (the secret key sealed at rest)",
               "admin", &kPutSettings, [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = need_target(service);
                 t.save_settings(merged(t, b));
                 return {200, settings_view(t), ""};
               }});
  r.push_back({"POST", "/api/v1/settings/cloudstack/validate",
               "Check the CloudStack settings (stored, with the body's changes) against CloudStack", "admin",
               &kValidateSettings,
               [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = need_target(service);
                 auto report = t.validate(merged(t, b));
                 json problems = json::array();
                 for (size_t i = 0; i < report.problems.size(); ++i)
                   problems.push_back({{"field", report.fields[i]}, {"message", report.problems[i]}});
                 return {200, {{"ok", report.ok()}, {"problems", problems}}, ""};
               },
               true});
  r.push_back({"GET", "/api/v1/network-mappings", "VMware network -> CloudStack network mappings", "operator",
               nullptr, [&service](auto&, auto&, auto&) -> Reply { return {200, mappings_view(need_target(service)), ""}; }});
  r.push_back({"PUT", "/api/v1/network-mappings", "Replace the network mappings", "operator", &kMappings,
               [&service](auto&, const json& b, auto&) -> Reply {
                 CloudStackTarget& t = need_target(service);
                 std::vector<NetworkMappingRow> rows;
                 std::set<std::string> seen;
                 for (size_t i = 0; i < b["mappings"].size(); ++i) {
                   const json& m = b["mappings"][i];
                   std::string source = m["source_network"];
                   if (source.empty() || !seen.insert(source).second) {
                     throw FieldError(fmt::format("mappings[{}].source_network", i),
                                      source.empty() ? "must not be empty" : "is mapped twice");
                   }
                   rows.push_back({source, m["target_network_id"], m.value("keep_mac", true)});
                 }
                 t.save_network_mappings(rows);
                 return {200, mappings_view(t), ""};
               }});
  return r;
}

}  // namespace mk::oma
