// CloudStack settings: where the API is, the credentials, and what migrated VMs are made
// of (zone, offerings, template, networks); plus validate_settings(), which checks them
// all against CloudStack and reports every problem at once.
//
// The secret key is held in memory in plain text only while in use; at rest
// (settings_to_json) it is sealed by the caller's sealer, the OMA's SecretBox
// (AES-256-GCM with a key file of mode 0600), so it is never stored in clear. Settings
// are plain values; validate_settings() is a free function without shared state
// (thread-safe).
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "cloudstack/client.h"

namespace mk::cloudstack {

struct Settings {
  std::string api_url;
  std::string api_key;
  std::string secret_key;
  std::string zone_id;
  std::string disk_offering_id;     // must be custom-size: volumes match source disks
  std::string service_offering_id;
  std::string template_id;          // must be ready in the zone; the template of every guest
                                    // os_templates does not name
  // A template per OS family or distro ("windows", "linux", "debian", "rhel", ...: the
  // names virt-inspector reports, guest_fit.h): an inspected guest's VM is deployed from
  // the template of its distro, else of its family, else template_id. Each must be ready.
  std::map<std::string, std::string> os_templates;
  std::vector<std::string> network_ids;
  std::string oma_mac;              // the OMA's own NIC, to find its VM in CloudStack
  std::string test_network_id;      // where test failovers boot ("" = none; then no test failover)
};

// Settings as stored: the secret only as "secret_key_sealed", produced by `seal` and
// read back by `open` (which throws if it cannot).
using SecretTransform = std::function<std::string(const std::string&)>;
Json settings_to_json(const Settings& settings, const SecretTransform& seal);
Settings settings_from_json(const Json& stored, const SecretTransform& open);

struct ValidationReport {
  std::vector<std::string> problems;  // each says what is wrong and what to do
  std::vector<std::string> fields;    // the setting each problem is about (same index):
                                      // api_url, api_key, zone_id, ..., network_ids
  std::string oma_vm_id;              // the OMA's VM, when found
  bool ok() const { return problems.empty(); }
  void add(const std::string& field, std::string problem) {
    fields.push_back(field);
    problems.push_back(std::move(problem));
  }
};

// The checks that need no CloudStack: the API URL is https:// (http:// only with
// options.allow_insecure_http). Throws schema::FieldError("api_url") saying what to do.
// Saving settings calls it, so an http:// URL is refused when it is given, not at cutover.
void check_settings(const Settings& settings, const ClientOptions& options);

// Checks that each setting exists and fits: the zone is enabled, the disk offering is
// custom-size, the template and every OS template are ready (under field "template_id",
// "os_templates.<key>"; a key that is no OS family or distro is a problem too), every network is in the zone, the OMA's VM is
// found by its MAC, and the account may attach volumes (attachVolume allowed, and the
// OMA's VM belongs to the account). Never throws for a CloudStack answer; every problem
// found is in the report. Wrong credentials or an unreachable API stop the checks there.
ValidationReport validate_settings(const Settings& settings, ClientOptions options = {});

}  // namespace mk::cloudstack
