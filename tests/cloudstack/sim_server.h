// SimServer: one CloudStack simulator (tests/lab/cloudstack/cloudstack_sim.py) for one
// test, in its own temporary directory, on 127.0.0.1 with a port the simulator picked
// itself (it binds port 0 and writes the port to a file, so there is no race).
//
// The SimServer owns the process (stopped by PID in the destructor) and the directory
// (removed with the volumes' sparse files and the by-id links). The secret key is
// written to a file of mode 0600, never passed on a command line. Not thread-safe.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cloudstack/client.h"
#include "cloudstack/volumes.h"
#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::cloudstack::test {

struct SimOptions {
  double job_delay_seconds = 0.02;
  int max_page_size = 500;
  std::vector<std::string> deny_apis;  // commands the simulated account may not call
  std::string oma_account;             // "": the OMA's VM is in the API key's account
  bool tls = false;                    // https with a self-signed certificate (ca_file())
  // The rules of a real cloud (see the simulator's header).
  int max_data_volumes = 32;           // KVM's maxdatavolumeslimit
  int custom_disk_max_gb = 1024;       // custom.diskoffering.size.max
  bool kvm_snapshot_enabled = false;   // kvm.snapshot.enabled
  bool user_account = false;           // the API key is a user's, not a root admin's
  bool allow_user_expunge = false;     // allow.user.expunge.recover.vm
  bool enforce_post_and_expires = false;  // enforce.post.requests.and.timestamps
  bool oma_vm_snapshot = false;        // the OMA's VM has a VM snapshot
  std::string oma_backup_offering;     // the OMA's VM has this backup offering
  std::string disk_bus = "virtio";     // "scsi": the OMA's disks are scsi-0QEMU_QEMU_HARDDISK_*
  // More OMA VMs (one per OMA node), each running with its own by-id directory:
  // oma_vm_id(2), by_id_dir(2), ... The data-volume cap applies to each VM.
  int extra_oma_vms = 0;
};

class SimServer {
 public:
  explicit SimServer(SimOptions options = {});
  ~SimServer();
  SimServer(const SimServer&) = delete;
  SimServer& operator=(const SimServer&) = delete;

  Endpoint endpoint() const;                       // the right key and secret
  std::string api_url() const;
  std::string ca_file() const { return dir_.file("ca.pem"); }  // when tls
  const std::string& dir() const { return dir_.path(); }  // the test's private directory
  std::string by_id_dir() const { return dir_.file("by-id"); }
  std::string oma_vm_id() const { return "0a000000-0000-4000-8000-00000000000a"; }
  // OMA VM n (1: the one above; 2..1+extra_oma_vms: the extra ones) and where its disks appear.
  std::string oma_vm_id(int n) const;
  std::string by_id_dir(int n) const;
  std::string oma_mac() const { return "02:00:00:00:0a:01"; }

  // Failure injection (see the simulator's /control/fail) and the state dump.
  void fail(const nlohmann::json& rule);
  void clear_failures();
  nlohmann::json state() const;

  // The volumes configuration of an OMA on this simulator: its VM, the zone, the custom
  // disk offering, the by-id directory and a 10 s device wait.
  // `vm`: which OMA VM (oma_vm_id(vm), by_id_dir(vm)).
  VolumesConfig volumes_config(const std::string& oma_id = "oma-1", int vm = 1) const;

  // The body of the OMA's PUT /api/v1/settings/cloudstack for this simulator: the right
  // key, the seeded zone, offerings, template and test network, the OMA's MAC.
  nlohmann::json oma_settings() const;

  // Client options that suit tests: fast polling, short timeouts, http allowed (the
  // simulator serves http unless tls is set).
  static ClientOptions fast_client_options();

 private:
  std::string control(const std::string& path, const std::string& body) const;
  mk::test::TempDir dir_{"mk-cloudstack"};
  int port_ = 0;
  bool tls_ = false;
  Subprocess process_;
};

// Well-known ids of the simulator's seeded inventory.
namespace seed {
inline const char* zone = "z0000000-0000-4000-8000-000000000001";
inline const char* custom_disk_offering = "do000000-0000-4000-8000-000000000001";
inline const char* fixed_disk_offering = "do000000-0000-4000-8000-000000000002";
inline const char* custom_service_offering = "so000000-0000-4000-8000-000000000001";
inline const char* fixed_service_offering = "so000000-0000-4000-8000-000000000002";
inline const char* ready_template = "t0000000-0000-4000-8000-000000000001";
inline const char* unready_template = "t0000000-0000-4000-8000-000000000002";
inline const char* windows_template = "t0000000-0000-4000-8000-000000000003";
inline const char* debian_template = "t0000000-0000-4000-8000-000000000004";
// listOsTypes (a subset of CloudStack's guest_os table)
inline const char* os_other_linux = "os000000-0000-4000-8000-000000000002";  // the templates' but Windows'
inline const char* os_other_pv = "os000000-0000-4000-8000-000000000003";
inline const char* os_debian_12 = "os000000-0000-4000-8000-000000000012";
inline const char* os_debian_12_32bit = "os000000-0000-4000-8000-000000000013";
inline const char* os_ubuntu_22_04 = "os000000-0000-4000-8000-000000000021";
inline const char* os_rhel_8 = "os000000-0000-4000-8000-000000000030";  // "Red Hat Enterprise Linux 8.0"
inline const char* os_rhel_9 = "os000000-0000-4000-8000-000000000031";  // "Red Hat Enterprise Linux 9"
inline const char* os_windows_2022 = "os000000-0000-4000-8000-000000000041";
inline const char* prod_network = "n0000000-0000-4000-8000-000000000001";
inline const char* test_network = "n0000000-0000-4000-8000-000000000002";
inline const char* nomac_network = "n0000000-0000-4000-8000-000000000003";
}  // namespace seed

}  // namespace mk::cloudstack::test
