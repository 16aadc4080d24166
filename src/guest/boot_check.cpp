#include "guest/boot_check.h"

#include <ctime>
#include <fstream>
#include <iterator>
#include <thread>

#include <nlohmann/json.hpp>

#include "guest/accel.h"
#include "guest/conversion.h"
#include "guest/scratch_dir.h"
#include "guest/throwaway_vm.h"

namespace mk::guest {
namespace {

enum class ConsoleSign { none, up, failed };

// What the console shows so far: only for stopping early, never for the verdict.
ConsoleSign read_console(const std::string& text) {
  // A login prompt comes before the default target (virt-v2v's firstboot scripts run
  // first): wait for the target itself, as systemd reports it on the console.
  for (const char* up : {"MK-GUEST-BOOTED", "Reached target \x1b[0;1;39mmulti-user.target", "Multi-User System.",
                         "Graphical Interface."}) {
    if (text.find(up) != std::string::npos) return ConsoleSign::up;
  }
  for (const char* failed : {"Kernel panic", "ALERT!", "Gave up waiting", "You are in emergency mode",
                             "Give root password", "(initramfs)"}) {
    if (text.find(failed) != std::string::npos) return ConsoleSign::failed;
  }
  return ConsoleSign::none;
}

std::string tail_of(const std::string& text, std::size_t n) {
  return text.size() > n ? text.substr(text.size() - n) : text;
}

double since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

bool cancelled(const BootCheckOptions& options) { return options.cancel && options.cancel->load(); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

BootCheckResult boot_check(const std::vector<DiskImage>& disks, const BootCheckOptions& options) {
  BootCheckResult result;
  const Accel accel = detect_accel();
  result.accel = accel_name(accel);
  ScratchDir dir("bootcheck", options.scratch_parent);
  std::vector<Overlay> overlays = make_overlays(disks, dir.path());
  const std::vector<DiskImage> images = images_of(overlays);
  if (options.convert) {
    ConversionOptions conv;
    conv.name = options.name;
    conv.firmware = options.firmware;
    conv.timeout = options.conversion_timeout;
    conv.cancel = options.cancel;
    conv.log_path = options.conversion_log;
    const ConversionResult c = convert_images(images, conv);
    result.conversion_seconds = c.seconds;
    if (cancelled(options)) {
      result.cancelled = true;
      result.reason = "the boot check was cancelled during the conversion";
      return result;
    }
    if (!c.ok) {
      result.reason = c.error;
      return result;
    }
    result.converted = true;
  }

  const long long boot_started = static_cast<long long>(std::time(nullptr)) - 2;
  const auto start = std::chrono::steady_clock::now();
  ConsoleSign sign = ConsoleSign::none;
  {
    ThrowawayVm vm(images, options.boot_disk, options.firmware, dir.path(), accel);
    while (since(start) < options.limit.count() && vm.running() && sign == ConsoleSign::none) {
      if (cancelled(options)) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      sign = read_console(vm.console());
    }
    result.seconds = since(start);
    if (cancelled(options)) {
      vm.stop();
      result.cancelled = true;
      result.reason = "the boot check was cancelled during the boot";
      result.console_tail = tail_of(vm.console(), 4096);
      return result;
    }
    result.timed_out = sign == ConsoleSign::none && vm.running();
    // The screen as the guest left it (a login prompt, a panic, an emergency shell),
    // before SysRq messages and the remount reach the console.
    const std::string picture = dir.path() + "/screen";
    result.screenshot_format = vm.screendump(picture, result.screenshot_error);
    if (!result.screenshot_format.empty()) result.screenshot = read_file(picture);
    vm.sync_disks(std::chrono::seconds(15));
    vm.stop();
    result.console_tail = tail_of(vm.console(), 4096);
  }
  result.evidence = read_boot_evidence(images, boot_started, std::chrono::seconds(600), options.cancel);
  if (cancelled(options)) {
    result.cancelled = true;
    result.reason = "the boot check was cancelled while reading the guest's journal";
    return result;
  }
  result.booted = result.evidence.journal_written && result.evidence.target_reached;
  if (result.booted) {
    result.reason = result.evidence.detail;
  } else if (result.timed_out) {
    result.reason = "the guest did not finish booting within " + std::to_string(options.limit.count()) +
                    " s (" + result.evidence.detail + ")";
  } else {
    result.reason = "the guest did not boot: " + result.evidence.detail;
  }
  return result;
}

nlohmann::json to_json(const BootCheckResult& r) {
  return {{"booted", r.booted},
          {"converted", r.converted},
          {"timed_out", r.timed_out},
          {"reason", r.reason},
          {"accel", r.accel},
          {"seconds", r.seconds},
          {"conversion_seconds", r.conversion_seconds},
          {"cancelled", r.cancelled},
          {"console_tail", r.console_tail},
          {"screenshot_format", r.screenshot_format},
          {"screenshot_bytes", r.screenshot.size()},
          {"screenshot_error", r.screenshot_error},
          {"evidence", {{"journal_written", r.evidence.journal_written},
                        {"target_reached", r.evidence.target_reached},
                        {"target", r.evidence.target},
                        {"detail", r.evidence.detail}}}};
}

}  // namespace mk::guest
