// CloudStackTarget: the OMA's CloudStack settings and network mappings (kept in the
// settings table) and the sessions built from them.
//
// The settings are one JSON value, "cloudstack", whose secret key is sealed with the
// OMA's SecretBox (AES-256-GCM, key file 0600) and which is flagged secret, so the
// generic settings listing never shows it; settings_json() never returns the secret.
// The network mappings ("cloudstack.network_mappings") map each VMware network name to
// a CloudStack network and say whether that network accepts a chosen MAC address.
// The OMA's identity recorded on every volume it creates ("oma.id") is made once.
//
// session() connects with the current settings: the OMA's own VM is found by its MAC
// (validate_settings), a Client, CloudStackVolumes and the cutover target are built.
// Sessions are cached until the settings or mappings change. Thread-safe.
//
// CloudStackChecks is the JobManager's TargetChecks for the "cloudstack" backend: the
// CloudStack preflight (cloudstack/preflight.h) of a VM as the OMA knows it, and the
// data-volume slots of the OMA's VM. It reads the limits afresh on every call (a few
// list calls), so a changed global setting counts at the next pass. Thread-safe.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "cloudstack/settings.h"
#include "cloudstack/vm_builder.h"
#include "cloudstack/volumes.h"
#include "oma/crypto.h"
#include "oma/db/config_repository.h"
#include "oma/db/storage_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/jobs/target_checks.h"

namespace mk::oma {

struct CloudStackOptions {
  std::string by_id_dir = "/dev/disk/by-id";
  std::chrono::milliseconds device_timeout{std::chrono::seconds(120)};
  cloudstack::ClientOptions client;
  // This OMA's VM in CloudStack, where its volumes are attached. "": the VM found by the
  // settings' oma_mac. An OMA node of several names its own (--node-cloudstack-vm-id):
  // the settings are the service's, shared by every node.
  std::string oma_vm_id;
};

struct NetworkMappingRow {
  std::string source_network;     // the VMware network (port group) name
  std::string target_network_id;  // the CloudStack network
  bool keep_mac = true;           // the network accepts the source NIC's MAC
};

// Everything one job needs to talk to CloudStack. Owns its Client; the volumes and the
// target refer to it.
struct CloudStackSession {
  std::unique_ptr<cloudstack::Client> client;
  std::unique_ptr<cloudstack::CloudStackVolumes> volumes;
  cloudstack::TargetSettings target;
  std::string test_network_id;
};

class CloudStackTarget {
 public:
  CloudStackTarget(ConfigRepository& config, SecretBox& secrets, CloudStackOptions options);

  // The stored settings (secret included, in memory only); nullopt if never saved.
  std::optional<cloudstack::Settings> settings();
  // Saves the settings; an empty secret_key keeps the stored one.
  void save_settings(cloudstack::Settings settings);
  std::vector<NetworkMappingRow> network_mappings();
  void save_network_mappings(const std::vector<NetworkMappingRow>& rows);

  // Checks settings (the stored ones merged with `changes`) against CloudStack: every
  // mapped network and the test network must exist in the zone.
  cloudstack::ValidationReport validate(const cloudstack::Settings& settings);

  // A session for the current settings. Throws UsageError saying what to fix when
  // CloudStack is not configured or the settings do not check out.
  std::shared_ptr<const CloudStackSession> session();

  std::string oma_id();
  const CloudStackOptions& options() const { return options_; }

 private:
  ConfigRepository& config_;
  SecretBox& secrets_;
  CloudStackOptions options_;
  std::mutex mu_;  // guards the cache
  std::string cached_key_;
  std::shared_ptr<const CloudStackSession> cached_;
};

// The source VM as the OMA knows it, for CloudStack. The OS disk is the one with the
// lowest unit number (the boot disk on the first controller). With `need_volumes`, a
// disk whose recorded volume is not a CloudStack volume is a UsageError.
cloudstack::SourceVm cloudstack_source_vm(VmRepository& vms, StorageRepository& storage, const VmRecord& vm,
                                          bool need_volumes);

class CloudStackChecks : public TargetChecks {
 public:
  CloudStackChecks(CloudStackTarget& target, VmRepository& vms, StorageRepository& storage)
      : target_(target), vms_(vms), storage_(storage) {}
  TargetReport check(const std::string& vm_id) override;
  VolumeSlots volume_slots(const std::string& vm_id) override;

 private:
  CloudStackTarget& target_;
  VmRepository& vms_;
  StorageRepository& storage_;
};

}  // namespace mk::oma
