// Which accelerator the throwaway VMs of guest conversion use: KVM when /dev/kvm can
// really run a guest, else TCG (software emulation).
//
// /dev/kvm existing is not enough: on nested, software-backed KVM (these machines) qemu
// aborts on an MSR, stops in firmware, or hangs a kernel early in its start. So detection
// boots the host's kernel (the one libguestfs's appliance runs) with no root file system
// under KVM, for at most 10 s; only a KVM that gets it to its "cannot mount root" panic is
// used. The answer is computed once per process (thread-safe) and can be
// forced with MK_GUEST_ACCEL=kvm|tcg.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace mk::guest {

enum class Accel { kvm, tcg };

// The accelerator to use (cached after the first call).
Accel detect_accel();
const char* accel_name(Accel accel);

// qemu-system-x86_64 arguments for `accel` ("-accel kvm -cpu host" or "-accel tcg -cpu max").
std::vector<std::string> qemu_accel_args(Accel accel);

// Environment for libguestfs tools (virt-inspector, guestfish, virt-v2v-in-place): the
// direct backend, force_tcg unless KVM is usable, and one appliance cache for all
// (LIBGUESTFS_CACHEDIR, default /var/tmp, whatever TMPDIR the caller has).
std::map<std::string, std::string> libguestfs_env(Accel accel);

}  // namespace mk::guest
