// DiskReader: an NBD server process (nbdkit, or qemu-nbd for qcow2 images) that serves
// one source disk read-only on a private Unix socket for the length of a pass.
//
// In production it runs nbdkit's vddk plugin against a snapshot (server, port, user,
// thumbprint, vm=moref=..., snapshot=..., transports, libdir; the password is read by
// nbdkit from a file, "password=+FILE", never put on a command line), behind nbdkit's
// blocksize filter (requests split at 2 MiB, as virt-v2v does: VDDK fails on larger
// ones) and retry filter (a dropped NBD/NFC connection to ESXi is reopened instead of
// failing the pass). nbdkit strips only a trailing LF from a password file, so the
// reader hands it a private copy of the first line without its CR. On stop, the vddk
// plugin gets `stop_grace` to let VDDK clean up (a hot-add transport detaches the
// snapshot's disks from the VMA) before it is killed. VDDK is proprietary
// and absent from test machines, so a stand-in serves the disk's flat file with nbdkit's
// file plugin instead. Either way nbdkit runs in the foreground with --exit-with-parent,
// start_*() returns once it serves, and stop() (or the destructor) ends it by PID and
// removes the socket directory.
//
// Not thread-safe; one owner.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/subprocess.h"

namespace mk::source {

struct VddkParams {
  std::string server;          // vCenter or ESXi host name
  int port = 0;                // vCenter's HTTPS port when not 443 (0: VDDK's default)
  std::string user;
  std::string password_file;   // mode 0600; nbdkit reads it (password=+FILE)
  std::string thumbprint;      // SHA-1 of the server certificate, AA:BB:...
  std::string vm_moref;        // "vm-42"
  // "snapshot-7"; "" opens the VM's own disk (no snapshot= parameter), which VDDK can
  // only while the VM is powered off (a running VM's disk is locked).
  std::string snapshot_moref;
  std::string file;            // the disk (in the snapshot): "[datastore1] web01/web01.vmdk"
  std::string transports = "nbdssl:nbd";  // or "hotadd:nbdssl:nbd" on a VMA inside vSphere
  std::string libdir = "/opt/vmware-vix-disklib-distrib";
  std::string nbdkit = "nbdkit";
  uint64_t read_rate = 0;      // bytes per second through nbdkit's rate filter; 0 = unlimited
  std::chrono::seconds stop_grace{120};  // SIGTERM to SIGKILL when the reader stops
};

// The nbdkit command line for the vddk plugin (checked; throws UsageError for values
// that would be unsafe or that VDDK would reject). Holds no secret.
std::vector<std::string> vddk_argv(const VddkParams& p, const std::string& socket);

class DiskReader {
 public:
  // `work_dir` is an existing private directory; the reader makes its own below it.
  static std::unique_ptr<DiskReader> start_vddk(const VddkParams& params, const std::string& work_dir,
                                                std::chrono::seconds timeout = std::chrono::seconds(120));
  // The stand-in: nbdkit's file plugin on a flat disk file (an absolute path to an
  // existing regular file), reading at most `read_rate` bytes per second (0: unlimited).
  static std::unique_ptr<DiskReader> start_file(const std::string& flat_file, const std::string& work_dir,
                                                std::chrono::seconds timeout = std::chrono::seconds(30),
                                                uint64_t read_rate = 0);
  // A qcow2 image served read-only by qemu-nbd, exporting dirty bitmap `bitmap` ("" for
  // none) as the qemu:dirty-bitmap:<bitmap> meta context.
  static std::unique_ptr<DiskReader> start_qemu_nbd(const std::string& image, const std::string& bitmap,
                                                    const std::string& work_dir,
                                                    std::chrono::seconds timeout = std::chrono::seconds(30));
  ~DiskReader();
  DiskReader(const DiskReader&) = delete;
  DiskReader& operator=(const DiskReader&) = delete;

  std::string uri() const;  // nbd+unix:///?socket=PATH
  pid_t pid() const { return process_.pid(); }
  const std::string& log_path() const { return log_; }
  void stop();

 private:
  DiskReader() = default;
  void launch(const std::string& work_dir, const std::function<std::vector<std::string>(const std::string&)>& argv,
              const std::string& what, std::chrono::seconds timeout);

  std::string dir_, socket_, log_;
  std::chrono::milliseconds stop_grace_{3000};
  mk::Subprocess process_;
};

}  // namespace mk::source
