#include "source/disk_reader.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "common/log.h"
#include "common/server_probe.h"

namespace mk::source {
namespace {

void require(bool ok, const std::string& message) {
  if (!ok) throw UsageError(message);
}

// The first line of `from` without its line end (LF or CR LF) into `to`, mode 0600, so
// that nbdkit, which strips only a trailing LF, reads the password the SOAP session uses.
void copy_password(const std::string& from, const std::string& to) {
  std::ifstream in(from);
  std::string pw;
  if (!in || !std::getline(in, pw)) throw UsageError(fmt::format("VDDK: cannot read the password file {}", from));
  if (!pw.empty() && pw.back() == '\r') pw.pop_back();
  int fd = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) throw Error(fmt::format("VDDK: cannot create {}: {}", to, std::strerror(errno)));
  pw += '\n';
  bool ok = ::write(fd, pw.data(), pw.size()) == static_cast<ssize_t>(pw.size());
  ::close(fd);
  if (!ok) throw Error(fmt::format("VDDK: cannot write {}", to));
}

}  // namespace

// Appends nbdkit's rate filter to a complete command line: the filter is an option,
// its rate= parameter (in bits per second) goes with the plugin's parameters.
static void add_rate_filter(std::vector<std::string>& argv, uint64_t bytes_per_second) {
  if (bytes_per_second == 0) return;
  argv.insert(argv.begin() + 1, "--filter=rate");
  argv.push_back("rate=" + std::to_string(bytes_per_second * 8));
}

std::vector<std::string> vddk_argv(const VddkParams& p, const std::string& socket) {
  static const std::regex moref("^[A-Za-z0-9_.:-]{1,80}$");
  static const std::regex host("^[A-Za-z0-9_.:\\[\\]-]{1,253}$");
  static const std::regex thumb("^([0-9A-F]{2}:){19}[0-9A-F]{2}$");
  static const std::regex transports("^[a-z]+(:[a-z]+)*$");
  require(std::regex_match(p.server, host), fmt::format("VDDK: server \"{}\" is not a host name", p.server));
  require(!p.user.empty() && p.user.find('\n') == std::string::npos, "VDDK: no (valid) user name");
  require(std::regex_match(p.thumbprint, thumb),
          fmt::format("VDDK: thumbprint \"{}\" is not a SHA-1 thumbprint like AA:BB:...", p.thumbprint));
  require(std::regex_match(p.vm_moref, moref), fmt::format("VDDK: VM moref \"{}\" is malformed", p.vm_moref));
  require(p.snapshot_moref.empty() || std::regex_match(p.snapshot_moref, moref),
          fmt::format("VDDK: snapshot moref \"{}\" is malformed", p.snapshot_moref));
  require(p.file.size() > 2 && p.file[0] == '[' && p.file.find(']') != std::string::npos &&
              p.file.find('\n') == std::string::npos,
          fmt::format("VDDK: disk file \"{}\" is not \"[datastore] path.vmdk\"", p.file));
  require(std::regex_match(p.transports, transports), fmt::format("VDDK: transports \"{}\" is malformed", p.transports));
  require(!p.password_file.empty() && p.password_file[0] == '/',
          "VDDK: the password file must be an absolute path (nbdkit reads it)");
  require(!p.libdir.empty() && p.libdir[0] == '/', "VDDK: libdir must be an absolute path");
  require(p.port >= 0 && p.port <= 65535, fmt::format("VDDK: port {} is not a TCP port", p.port));
  // Filters, client side first: requests split at 2 MiB, then retried (reopening VDDK).
  // The vddk plugin does not advertise multi-conn (no can_multi_conn callback; these
  // filters pass the plugin's answer on), so the engine copies such a disk over one
  // connection whatever --nbd-connections says (engine/copier.cpp).
  std::vector<std::string> argv = {p.nbdkit, "-f", "-r", "--exit-with-parent", "--filter=blocksize",
                                   "--filter=retry", "-U", socket, "vddk",
                                   "libdir=" + p.libdir, "server=" + p.server, "user=" + p.user,
                                   "password=+" + p.password_file,  // nbdkit reads the password from the file
                                   "thumbprint=" + p.thumbprint, "vm=moref=" + p.vm_moref,
                                   "transports=" + p.transports, "file=" + p.file, "maxdata=2M"};
  // Without a snapshot VDDK opens the VM's own disk (a powered-off VM's pass).
  if (!p.snapshot_moref.empty()) argv.insert(argv.end() - 3, "snapshot=" + p.snapshot_moref);
  if (p.port != 0) argv.push_back("port=" + std::to_string(p.port));
  add_rate_filter(argv, p.read_rate);
  return argv;
}

std::unique_ptr<DiskReader> DiskReader::start_vddk(const VddkParams& params, const std::string& work_dir,
                                                   std::chrono::seconds timeout) {
  vddk_argv(params, "/check");  // validate before anything is started
  if (!std::filesystem::exists(params.libdir + "/lib64")) {
    throw UsageError(fmt::format("VDDK is not installed in {} (no lib64/ there); see docs/vddk.md", params.libdir));
  }
  std::unique_ptr<DiskReader> r(new DiskReader());
  r->stop_grace_ = params.stop_grace;
  r->launch(work_dir,
            [&](const std::string& socket) {
              VddkParams p = params;
              p.password_file = std::filesystem::path(socket).parent_path() / "password";
              copy_password(params.password_file, p.password_file);
              return vddk_argv(p, socket);
            },
            fmt::format("nbdkit vddk plugin for {} in {} of {}", params.file,
                        params.snapshot_moref.empty() ? "the VM's own disks (no snapshot)"
                                                      : "snapshot " + params.snapshot_moref,
                        params.vm_moref),
            timeout);
  return r;
}

std::unique_ptr<DiskReader> DiskReader::start_file(const std::string& flat_file, const std::string& work_dir,
                                                   std::chrono::seconds timeout, uint64_t read_rate) {
  struct stat st {};
  if (flat_file.empty() || flat_file[0] != '/' || ::stat(flat_file.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) {
    throw UsageError(fmt::format("disk stand-in: \"{}\" is not an absolute path to an existing regular file", flat_file));
  }
  std::unique_ptr<DiskReader> r(new DiskReader());
  r->launch(work_dir,
            [&](const std::string& socket) {
              std::vector<std::string> argv = {"nbdkit", "-f", "-r", "--exit-with-parent", "-U", socket, "file",
                                               "file=" + flat_file};
              add_rate_filter(argv, read_rate);
              return argv;
            },
            "nbdkit file plugin (VDDK stand-in) on " + flat_file, timeout);
  return r;
}

std::unique_ptr<DiskReader> DiskReader::start_qemu_nbd(const std::string& image, const std::string& bitmap,
                                                       const std::string& work_dir, std::chrono::seconds timeout) {
  std::unique_ptr<DiskReader> r(new DiskReader());
  r->launch(work_dir,
            [&](const std::string& socket) {
              std::vector<std::string> argv = {"qemu-nbd", "--read-only", "--format=qcow2", "--shared=8",
                                               "--persistent", "--socket=" + socket};
              if (!bitmap.empty()) argv.push_back("--bitmap=" + bitmap);
              argv.push_back(image);
              return argv;
            },
            fmt::format("qemu-nbd on {} (bitmap \"{}\")", image, bitmap), timeout);
  return r;
}

void DiskReader::launch(const std::string& work_dir,
                        const std::function<std::vector<std::string>(const std::string&)>& argv,
                        const std::string& what, std::chrono::seconds timeout) {
  std::string pattern = work_dir + "/reader-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data())) {
    throw Error(fmt::format("{}: cannot create a directory under {}: {}", what, work_dir, std::strerror(errno)));
  }
  dir_ = buf.data();
  socket_ = dir_ + "/nbd.sock";
  log_ = dir_ + "/nbdkit.log";
  if (socket_.size() >= sizeof(sockaddr_un::sun_path)) {
    throw Error(fmt::format("{}: socket path {} is too long; use a shorter work directory", what, socket_));
  }
  SpawnOptions so;
  so.stdout_path = so.stderr_path = log_;
  // A session of its own: under the kernel's autogroup scheduling, sessions share the
  // CPU fairly, and a reader in the caller's session would take its CPU from the copy's.
  so.own_session = true;
  process_ = Subprocess::spawn(argv(socket_), so);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!accepts_unix(socket_)) {
    if (!process_.running()) {
      throw Error(fmt::format("{} exited (status {}) before serving; its log:\n{}", what,
                              process_.exit_status().value_or(-1), log_tail(log_)));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      std::string log = log_tail(log_);
      stop();
      throw Error(fmt::format("{} did not serve within {} s; its log:\n{}", what, timeout.count(), log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  log::debug("{} serves {}", what, uri());
}

DiskReader::~DiskReader() { stop(); }

std::string DiskReader::uri() const { return "nbd+unix:///?socket=" + socket_; }

void DiskReader::stop() {
  process_.stop(stop_grace_);
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
    dir_.clear();
  }
}

}  // namespace mk::source
