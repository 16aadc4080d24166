#include "guest/accel.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mutex>

#include "common/subprocess.h"
#include "guest/scratch_dir.h"

namespace mk::guest {
namespace {

// A kernel in /boot (the last by name), where libguestfs's appliance (supermin) takes
// its kernel from. "" when there is none.
std::string host_kernel() {
  std::string best;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/boot", ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("vmlinuz-", 0) == 0 && e.path().string() > best) best = e.path().string();
  }
  return best;
}

// Boots that kernel under KVM with no root file system: a KVM that runs guests gets it
// through decompression, long mode, timers and its whole start to "Kernel panic ... VFS:
// Unable to mount root fs" in a second or two, and qemu exits (panic=-1, -no-reboot).
// A 512-byte boot sector is not enough: on these machines it printed under KVM while a
// kernel hung right after its real-mode stub ("Probing EDD"), and every libguestfs
// appliance with it (under TCG the same kernel reached its panic in 8 s).
bool kvm_runs_a_guest() {
  if (access("/dev/kvm", R_OK | W_OK) != 0) return false;
  const std::string kernel = host_kernel();
  if (kernel.empty()) return false;
  ScratchDir dir("kvm-probe");
  const std::string serial = dir.path() + "/serial.txt";
  Subprocess qemu = Subprocess::spawn(
      {"qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults", "-display", "none",
       "-no-reboot", "-serial", "file:" + serial, "-kernel", kernel, "-append", "console=ttyS0 panic=-1 quiet"});
  auto panicked = [&] {
    std::ifstream in(serial);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    return text.find("Kernel panic") != std::string::npos;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    if (qemu.wait_for(std::chrono::milliseconds(200))) return panicked();  // exited: booted, or aborted
    if (panicked()) return true;
  }
  return false;  // hung on the way
}

}  // namespace

Accel detect_accel() {
  static std::once_flag once;
  static Accel accel = Accel::tcg;
  std::call_once(once, [] {
    const char* forced = std::getenv("MK_GUEST_ACCEL");
    if (forced && std::string(forced) == "tcg") accel = Accel::tcg;
    else if (forced && std::string(forced) == "kvm") accel = Accel::kvm;
    else accel = kvm_runs_a_guest() ? Accel::kvm : Accel::tcg;
  });
  return accel;
}

const char* accel_name(Accel accel) { return accel == Accel::kvm ? "kvm" : "tcg"; }

std::vector<std::string> qemu_accel_args(Accel accel) {
  if (accel == Accel::kvm) return {"-accel", "kvm", "-cpu", "host"};
  return {"-accel", "tcg", "-cpu", "max"};
}

std::map<std::string, std::string> libguestfs_env(Accel accel) {
  std::map<std::string, std::string> env{{"LIBGUESTFS_BACKEND", "direct"}};
  // The appliance cache (supermin, ~300 MB, built on first use) is shared by every run,
  // not rebuilt in each caller's private TMPDIR.
  const char* cache = std::getenv("LIBGUESTFS_CACHEDIR");
  env["LIBGUESTFS_CACHEDIR"] = cache && *cache ? cache : "/var/tmp";
  if (accel == Accel::tcg) env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg";
  return env;
}

}  // namespace mk::guest
