// VcsimLab: a private vSphere for one test. vcsim (govmomi's simulator) and the CBT shim
// in front of it (cbt_shim.py), both on 127.0.0.1 ports chosen at run time, with a
// throwaway self-signed certificate, user and password, and vcsim's datastores in the
// lab's temporary directory so that tests can write the disks' flat files.
//
// The default inventory: datacenter DC0, host DC0_H0 with VMs DC0_H0_VM0 and
// DC0_H0_VM1, cluster DC0_C0 with DC0_C0_RP0_VM0 and ..._VM1, datastore LocalDS_0.
// Every VM has one 1 MiB disk "[LocalDS_0] <vm>/disk1.vmdk" whose flat file does not
// exist until a test creates it. A snapshot freezes the disks: its disks are copies of
// the flat files at that moment (see flat_file()), as a real snapshot is read-only.
//
// The lab owns both processes and the directory; the destructor stops the processes by
// PID and removes everything. Not thread-safe; one per test.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "common/subprocess.h"
#include "support/temp_dir.h"

namespace mk::test {

struct VcsimOptions {
  uint64_t cbt_block_size = 64 * 1024;  // the shim's change-tracking granularity
  int max_extents = 64;                 // changed areas per QueryChangedDiskAreas answer
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
  // One file per existing snapshot, named by its moref, one "<vm moref>\t<disk file
  // name>\t<flat file>" line per disk: what the VDDK stand-in serves (FAKE_VDDK_SNAPSHOTS).
  std::string snapshot_index() const { return dir_.file("snapshots"); }
  const TempDir& dir() const { return dir_; }

 private:
  void start_vcsim();
  void start_shim(const VcsimOptions& options);
  std::string shim_request(const std::string& method, const std::string& path, const std::string& body) const;

  TempDir dir_;
  std::string user_ = "mk-lab";
  std::string password_;
  std::string thumbprint_;
  int vcsim_port_ = 0, shim_port_ = 0;
  mk::Subprocess vcsim_, shim_;
};

}  // namespace mk::test
