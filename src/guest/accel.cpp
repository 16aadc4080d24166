#include "guest/accel.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <mutex>

#include "common/subprocess.h"
#include "guest/scratch_dir.h"

namespace mk::guest {
namespace {

// mov dx,0x3f8; mov al,'K'; out dx,al; cli; hlt; jmp $-1 — then the boot signature.
std::string probe_boot_sector() {
  std::string sector(512, '\0');
  const unsigned char code[] = {0xBA, 0xF8, 0x03, 0xB0, 'K', 0xEE, 0xFA, 0xF4, 0xEB, 0xFD};
  sector.replace(0, sizeof(code), reinterpret_cast<const char*>(code), sizeof(code));
  sector[510] = static_cast<char>(0x55);
  sector[511] = static_cast<char>(0xAA);
  return sector;
}

bool kvm_runs_a_guest() {
  if (access("/dev/kvm", R_OK | W_OK) != 0) return false;
  ScratchDir dir("kvm-probe");
  const std::string disk = dir.path() + "/boot.img";
  const std::string serial = dir.path() + "/serial.txt";
  std::ofstream(disk, std::ios::binary) << probe_boot_sector();
  Subprocess qemu = Subprocess::spawn(
      {"qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "64", "-nodefaults",
       "-display", "none", "-no-reboot", "-serial", "file:" + serial, "-drive",
       "file=" + disk + ",format=raw,if=ide"});
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
  while (std::chrono::steady_clock::now() < deadline) {
    if (qemu.wait_for(std::chrono::milliseconds(200))) return false;  // aborted
    std::ifstream in(serial);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find('K') != std::string::npos) return true;
  }
  return false;  // stuck in firmware
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
