// Lab VMs: how tests connect to the lab's vSphere, and lab VMs: gives a vcsim VM the disks a scenario needs and fills their flat files with
// generated data, so that tests and the demo copy real bytes through the VMware source.
//
// Generated data looks like a used disk: 4 MiB pieces of random bytes every 32 MiB,
// a piece of explicit zeros now and then, holes in between. The same seed gives the
// same bytes. Functions only; no state. Not thread-safe for one VM.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "vsphere/inventory.h"
#include "vsphere/session.h"

namespace mk::test {

class VcsimLab;

// A session to the lab (through the CBT shim), pinning its certificate's thumbprint,
// without the keep-alive thread.
vsphere::ConnectOptions lab_connect_options(const VcsimLab& lab);

// How a lab disk is backed: the kinds of disks a real site has and a snapshot may not cover.
struct LabDiskOptions {
  std::string disk_mode = "persistent";  // "independent_persistent", "independent_nonpersistent", ...
  std::string sharing;                   // "" (unset) or "sharingMultiWriter"
  std::string rdm_mode;                  // "" (a virtual disk), "physicalMode" or "virtualMode" (an RDM)
};

// Adds a thin disk of `capacity_bytes` (a multiple of 1 KiB) as "[datastore] VM/STEM.vmdk"
// on controller `controller_key`, at its first free unit; vcsim creates the files.
// Returns the VM as it is afterwards.
vsphere::VmInfo add_lab_disk(vsphere::Session& s, const vsphere::VmInfo& vm, int controller_key,
                             const std::string& datastore, uint64_t capacity_bytes, const std::string& file_stem,
                             const LabDiskOptions& options = {});

// Grows disk `disk_key` to `capacity_bytes` (a multiple of 1 KiB) as an operator extends a
// disk in vCenter (ReconfigVM, edit); the flat file is the caller's. Returns the VM as
// it is afterwards.
vsphere::VmInfo grow_lab_disk(vsphere::Session& s, const vsphere::VmInfo& vm, int disk_key, uint64_t capacity_bytes);

// Adds a controller: "VirtualNVMEController", "VirtualAHCIController" (SATA),
// "ParaVirtualSCSIController" (with `shared_bus`: "noSharing", "physicalSharing", ...).
// Returns its key.
int add_lab_controller(vsphere::Session& s, const vsphere::VmInfo& vm, const std::string& type,
                       const std::string& shared_bus = "noSharing");

// Sets config.bootOptions.bootOrder to these disks.
void set_lab_boot_order(vsphere::Session& s, const vsphere::VmInfo& vm, const std::vector<int>& disk_keys);

// The controller key of the VM's first disk (vcsim's default SCSI controller).
int first_disk_controller(const vsphere::VmInfo& vm);

// Makes `flat_file` a sparse file of `size` bytes holding generated data.
void fill_generated_disk(const std::string& flat_file, uint64_t size, uint64_t seed);

// Makes `flat_file` a sparse file of `size` bytes with two 64 KiB pieces of generated
// data (at the start and in the middle): a disk that costs 128 KiB, for labs of hundreds.
void fill_light_disk(const std::string& flat_file, uint64_t size, uint64_t seed);

// What seed_lab_vm() gives a VM: disks of these sizes in place of vcsim's 1 MiB one,
// filled as `fill` says. sparse: fill_generated_disk(); dense: random bytes throughout;
// light: fill_light_disk().
enum class LabFill { Sparse, Dense, Light };
struct LabSeedOptions {
  std::vector<uint64_t> disk_mib = {256, 128};
  LabFill fill = LabFill::Sparse;
  uint64_t seed = 1;
  // Raw disk images (unit order) the first VM's disks are copies of, in place of
  // disk_mib and fill: each disk has its image's size (a multiple of 1 KiB, as vSphere
  // sizes disks) and its flat file is a sparse copy (the image itself is never written).
  std::vector<std::string> disk_images;
};

// Gives the VM at `inventory_path` ("DC0/vm/DC0_H0_VM0") the disks of `o` (files
// "lab-disk<N>.vmdk" on the datastore of its first disk, which it replaces) and fills
// their flat files; `index` (its place in the lab) picks the data. Returns what mk-lab
// writes of it: {name, instance_uuid, inventory_path, disks: [{key, unit,
// capacity_bytes, file_name, flat_file}]}.
nlohmann::json seed_lab_vm(const VcsimLab& lab, vsphere::Session& s, const std::string& inventory_path,
                           const LabSeedOptions& o, int index);

// Seeds the first `count` VMs of lab.inventory().vm_paths() with `threads` threads over
// the one (thread-safe) session. The CBT shim answers one call at a time, so threads only
// overlap this side's work with the shim's: 256 VMs took 8.7-11 s with 1, 2 or 4 threads
// on a loaded 2-core machine. Returns their seed_lab_vm() answers in that order; the
// first error is thrown once every thread has stopped.
nlohmann::json seed_lab_vms(const VcsimLab& lab, vsphere::Session& s, int count, const LabSeedOptions& o, int threads = 2);

// Changes `count` scattered 64 KiB blocks of `flat_file` (a guest writing). Returns the
// offsets of the blocks written (fewer than `count` when a block was written twice).
std::set<uint64_t> scribble(const std::string& flat_file, uint64_t size, int count, uint64_t seed);

}  // namespace mk::test
