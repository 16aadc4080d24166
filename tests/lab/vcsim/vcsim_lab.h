// VcsimLab: a private vSphere for one test. vcsim (govmomi's simulator) and the CBT shim
// in front of it (cbt_shim.py), both on 127.0.0.1 ports chosen at run time, with a
// throwaway self-signed certificate, user and password, and vcsim's datastores in the
// lab's temporary directory so that tests can write the disks' flat files.
//
// The default inventory: datacenter DC0, host DC0_H0 with VMs DC0_H0_VM0 and
// DC0_H0_VM1, cluster DC0_C0 (hosts DC0_C0_H0..H2) with DC0_C0_RP0_VM0 and ..._VM1,
// datastore LocalDS_0. VcsimInventory asks vcsim for a larger one with its own model
// flags (up to hundreds of VMs over several clusters and hosts). Every VM has one 1 MiB
// disk "[LocalDS_0] <vm>/disk1.vmdk" whose flat file does not exist until a test
// creates it: a VM costs no disk space until a test gives it data. A snapshot freezes the disks: its disks are copies of
// the flat files at that moment (see flat_file()), as a real snapshot is read-only.
//
// The lab owns both processes and the directory; the destructor stops the processes by
// PID and removes everything. Not thread-safe; one per test.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::test {

// What vcsim's model builds at start (its flags -cluster, -host, -standalone-host, -vm,
// -ds), in one datacenter DC0. The defaults are vcsim's own: the 4-VM inventory above.
// VMs: DC0_H<h>_VM<i> on standalone host h, DC0_C<c>_RP0_VM<i> in cluster c (vcsim
// places each on one of the cluster's hosts DC0_C<c>_H<n>, at random); every VM's files
// are on LocalDS_0 (vcsim's model puts them there whatever -ds says; the other
// datastores are mounted on every host, and seed_lab_vms() spreads disks over them). One datacenter only: vcsim names every
// datacenter's first datastore LocalDS_0, and a "[LocalDS_0] ..." path could not say
// which one flat_file() means.
struct VcsimInventory {
  int clusters = 1;           // -cluster
  int hosts_per_cluster = 3;  // -host
  int standalone_hosts = 1;   // -standalone-host
  int vms_per_pool = 2;       // -vm: per standalone host and per cluster (its root pool)
  int datastores = 1;         // -ds: LocalDS_0..
  int vms() const { return (clusters + standalone_hosts) * vms_per_pool; }
  int hosts() const { return clusters * hosts_per_cluster + standalone_hosts; }
  bool is_default() const;
  // The VMs' inventory paths ("DC0/vm/DC0_C1_RP0_VM3"), spread over the compute
  // resources: the i-th VM of every standalone host and cluster before any (i+1)-th.
  // The default inventory keeps the order the lab has always seeded its VMs in:
  // DC0_H0_VM0, DC0_H0_VM1, DC0_C0_RP0_VM0, DC0_C0_RP0_VM1.
  std::vector<std::string> vm_paths() const;
};

struct VcsimOptions {
  uint64_t cbt_block_size = 64 * 1024;  // the shim's change-tracking granularity
  int max_extents = 64;                 // changed areas per QueryChangedDiskAreas answer
  VcsimInventory inventory;
};

class VcsimLab {
 public:
  explicit VcsimLab(const VcsimOptions& options = {});
  ~VcsimLab();
  VcsimLab(const VcsimLab&) = delete;
  VcsimLab& operator=(const VcsimLab&) = delete;

  std::string url() const;          // the shim: https://127.0.0.1:PORT/sdk
  std::string vcsim_url() const;    // vcsim itself, without CBT
  const std::string& user() const { return user_; }
  std::string password_file() const { return dir_.file("password"); }          // mode 0600
  std::string wrong_password_file() const { return dir_.file("wrong-password"); }
  const std::string& thumbprint() const { return thumbprint_; }  // SHA-1 of the certificate
  std::string ca_file() const { return dir_.file("cert.pem"); }  // the self-signed certificate

  // What vcsim cannot do, modelled by the shim (see cbt_shim.py):
  // property `path` of `moref` answers `val_xml` (a <val xsi:type=...> element), or is
  // absent when nullopt: an encrypted VM, consolidation needed, an orphaned VM...
  void override_property(const std::string& moref, const std::string& path, const std::optional<std::string>& val_xml);
  // The next `count` QueryChangedDiskAreas calls matching `change_id` ("*", "stored" or
  // "" for any) answer the vim25 fault `fault` ("FileFault", "InvalidArgument", ...).
  void inject_qcda_fault(const std::string& fault, int count = 1, const std::string& change_id = "",
                         const std::string& message = "");
  // Calls per SOAP method ("calls") and the maxObjects of each RetrievePropertiesEx.
  nlohmann::json shim_stats() const;

  // The flat file holding the data of "[datastore] dir/name.vmdk" (dir/name-flat.vmdk).
  // A snapshot's disks name frozen copies of the VM's flat files, made when it was taken
  // and removed with it (cbt_shim.py): flat_file() of a snapshot's disk is its copy.
  std::string flat_file(const std::string& disk_file_name) const;
  // The directory holding datastore `name` ("LocalDS_1"): what vma-lab's
  // --lab-flat-datastore NAME=DIR maps.
  std::string datastore_dir(const std::string& name) const;
  // One file per existing snapshot, named by its moref, one "<vm moref>\t<disk file
  // name>\t<flat file>" line per disk: what the VDDK stand-in serves (FAKE_VDDK_SNAPSHOTS).
  std::string snapshot_index() const { return dir_.file("snapshots"); }
  const TempDir& dir() const { return dir_; }
  const VcsimInventory& inventory() const { return inventory_; }

 private:
  void start_vcsim();
  static void check(const VcsimInventory& inventory);
  void start_shim(const VcsimOptions& options);
  std::string shim_request(const std::string& method, const std::string& path, const std::string& body) const;

  TempDir dir_;
  VcsimInventory inventory_;
  std::string user_ = "mk-lab";
  std::string password_;
  std::string thumbprint_;
  int vcsim_port_ = 0, shim_port_ = 0;
  mk::Subprocess vcsim_, shim_;
};

}  // namespace mk::test
