#include "guest/throwaway_vm.h"

#include <sys/socket.h>
#include <sys/time.h>
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
    : console_path_(dir + "/console.txt"), monitor_path_(dir + "/monitor.sock"), qmp_path_(dir + "/qmp.sock") {
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
                           "unix:" + monitor_path_ + ",server=on,wait=off", "-qmp",
                           "unix:" + qmp_path_ + ",server=on,wait=off"});
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

namespace {

// One QMP conversation on a Unix socket: JSON lines in both directions. Asynchronous
// events ({"event": ...}) may come between a command and its answer and are skipped.
class QmpSession {
 public:
  QmpSession(const std::string& path, std::chrono::seconds wait) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    timeval tv{static_cast<time_t>(wait.count()), 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) close_fd();
  }
  ~QmpSession() { close_fd(); }
  bool open() const { return fd_ >= 0; }

  // The next line that is not an event; "" when the socket closed or timed out.
  std::string answer() {
    for (;;) {
      std::string line = read_line();
      if (line.empty() || line.find("\"event\"") == std::string::npos) return line;
    }
  }
  // Sends one command and returns its answer (the greeting must have been read).
  std::string execute(const std::string& command_json) {
    const std::string line = command_json + "\n";
    if (::write(fd_, line.data(), line.size()) != static_cast<ssize_t>(line.size())) return "";
    return answer();
  }

 private:
  std::string read_line() {
    for (;;) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      char chunk[4096];
      const ssize_t n = ::recv(fd_, chunk, sizeof(chunk), 0);
      if (n <= 0) return "";
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }
  void close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd_ = -1;
  std::string buffer_;
};

// A QMP string: the path is ours (the scratch directory), but quote it properly anyway.
std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string ThrowawayVm::screendump(const std::string& path, std::string& error, std::chrono::seconds wait) {
  if (!running()) {
    error = "qemu is not running (the guest powered off or crashed)";
    return "";
  }
  QmpSession qmp(qmp_path_, wait);
  if (!qmp.open()) {
    error = "cannot connect to qemu's QMP socket " + qmp_path_;
    return "";
  }
  if (qmp.answer().find("\"QMP\"") == std::string::npos ||
      qmp.execute(R"({"execute":"qmp_capabilities"})").find("\"return\"") == std::string::npos) {
    error = "qemu's QMP socket did not greet or accept qmp_capabilities";
    return "";
  }
  // PNG first; a qemu without it (older than 7.1, which has no "format" argument, or
  // built without libpng) answers with an error, and is asked again for its default, PPM.
  const std::string file = R"({"execute":"screendump","arguments":{"filename":)" + json_string(path);
  std::string reply = qmp.execute(file + R"(,"format":"png"}})");
  if (reply.find("\"return\"") != std::string::npos) return "png";
  const std::string png_error = reply.empty() ? "no answer" : reply;
  reply = qmp.execute(file + "}}");
  if (reply.find("\"return\"") != std::string::npos) return "ppm";
  error = "qemu refused screendump (png: " + png_error + "; ppm: " + (reply.empty() ? "no answer" : reply) + ")";
  return "";
}

void ThrowawayVm::stop() {
  qemu_.stop(std::chrono::milliseconds(2000));
  ::unlink(monitor_path_.c_str());
  ::unlink(qmp_path_.c_str());
}

}  // namespace mk::guest
