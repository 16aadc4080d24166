#include "guest/throwaway_vm.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <thread>

#include "common/error.h"

namespace mk::guest {

ThrowawayVm::ThrowawayVm(const std::vector<DiskImage>& disks, int boot_disk, const std::string& firmware,
                         const std::string& dir, Accel accel)
    : console_path_(dir + "/console.txt"), monitor_path_(dir + "/monitor.sock") {
  std::vector<std::string> argv{"qemu-system-x86_64"};
  for (const std::string& a : qemu_accel_args(accel)) argv.push_back(a);
  for (const char* a : {"-machine", "pc", "-m", "1024", "-smp", "1", "-nodefaults", "-display", "none",
                        "-vga", "std", "-nic", "none", "-no-reboot"}) {
    argv.emplace_back(a);
  }
  if (firmware == "uefi") {
    argv.insert(argv.end(), {"-bios", "/usr/share/ovmf/OVMF.fd"});
  }
  argv.insert(argv.end(), {"-serial", "file:" + console_path_, "-monitor",
                           "unix:" + monitor_path_ + ",server=on,wait=off"});
  for (std::size_t i = 0; i < disks.size(); ++i) {
    const std::string id = "disk" + std::to_string(i);
    argv.insert(argv.end(), {"-drive", "file=" + disks[i].path + ",format=" + disks[i].format +
                                           ",if=none,id=" + id + ",cache=writeback"});
    std::string device = "virtio-blk-pci,drive=" + id;
    if (static_cast<int>(i) == boot_disk) device += ",bootindex=0";
    argv.insert(argv.end(), {"-device", device});
  }
  SpawnOptions spawn;
  spawn.stderr_path = dir + "/qemu.log";
  spawn.stdout_path = dir + "/qemu.log";
  qemu_ = Subprocess::spawn(argv, spawn);
}

ThrowawayVm::~ThrowawayVm() { stop(); }

bool ThrowawayVm::running() { return qemu_.running(); }

std::string ThrowawayVm::console() const {
  std::ifstream in(console_path_, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

bool ThrowawayVm::monitor_command(const std::string& command) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, monitor_path_.c_str(), sizeof(addr.sun_path) - 1);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  const std::string line = command + "\n";
  ok = ok && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  // HMP answers with a banner and an echo; reading a little makes sure it ran.
  char buf[512];
  if (ok) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    (void)::recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
  }
  ::close(fd);
  return ok;
}

bool ThrowawayVm::sync_disks(std::chrono::seconds wait) {
  if (!running()) return false;
  if (!monitor_command("sendkey alt-sysrq-s") || !monitor_command("sendkey alt-sysrq-u")) return false;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  while (std::chrono::steady_clock::now() < deadline && running()) {
    if (console().find("Emergency Remount complete") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  return true;
}

void ThrowawayVm::stop() {
  qemu_.stop(std::chrono::milliseconds(2000));
  ::unlink(monitor_path_.c_str());
}

}  // namespace mk::guest
