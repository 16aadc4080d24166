// mk-guest: guest inspection, conversion and boot checks on disk images, printing JSON.
//   mk-guest inspect DISK...                      what is installed, convertible or not
//   mk-guest convert DISK...                      convert in place (overlays, commit on success)
//   mk-guest boot-check [--no-convert] DISK...    convert overlays and boot them; disks unchanged
// Exit status: 0 done (and booted, for boot-check), 1 failed / not booted, 2 usage.
#include <fstream>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "guest/accel.h"
#include "guest/boot_check.h"
#include "guest/conversion.h"
#include "guest/inspection.h"

namespace {

std::vector<mk::guest::DiskImage> images(const std::vector<std::string>& paths, const std::string& format) {
  std::vector<mk::guest::DiskImage> out;
  for (const std::string& p : paths) out.push_back({p, format});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Guest inspection, conversion and boot checks"};
  app.require_subcommand(1);
  std::vector<std::string> disks;
  std::string format = "raw";
  std::string name = "guest";
  std::string firmware = "bios";
  int boot_disk = 0;
  int limit = 180;
  int timeout = 1800;
  bool no_convert = false;
  for (const char* n : {"inspect", "convert", "boot-check"}) {
    CLI::App* sub = app.add_subcommand(n);
    sub->add_option("disks", disks, "disk images in unit order")->required();
    sub->add_option("--format", format, "raw or qcow2")->check(CLI::IsMember({"raw", "qcow2"}));
    sub->add_option("--name", name, "the VM's name (messages, domain XML)");
    sub->add_option("--firmware", firmware, "bios or uefi")->check(CLI::IsMember({"bios", "uefi"}));
    sub->add_option("--timeout", timeout, "conversion time limit, seconds");
  }
  CLI::App* check = app.get_subcommand("boot-check");
  check->add_option("--boot-disk", boot_disk, "index of the disk to boot from");
  check->add_option("--limit", limit, "boot time limit, seconds");
  check->add_flag("--no-convert", no_convert, "boot the disks as they are");
  std::string screenshot;
  check->add_option("--screenshot", screenshot, "write the VGA console's picture here (PNG, or PPM from an old qemu)");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto disk_images = images(disks, format);
    nlohmann::json out;
    bool ok = true;
    if (app.got_subcommand("inspect")) {
      out = mk::guest::to_json(mk::guest::inspect_guest(disk_images));
    } else if (app.got_subcommand("convert")) {
      mk::guest::ConversionOptions options;
      options.name = name;
      options.firmware = firmware;
      options.timeout = std::chrono::seconds(timeout);
      const auto r = mk::guest::convert_volumes(disk_images, options);
      ok = r.ok;
      out = {{"ok", r.ok}, {"error", r.error}, {"seconds", r.seconds}, {"commit_seconds", r.commit_seconds},
             {"log_tail", r.log_tail}};
    } else {
      mk::guest::BootCheckOptions options;
      options.name = name;
      options.firmware = firmware;
      options.boot_disk = boot_disk;
      options.convert = !no_convert;
      options.limit = std::chrono::seconds(limit);
      options.conversion_timeout = std::chrono::seconds(timeout);
      const auto r = mk::guest::boot_check(disk_images, options);
      ok = r.booted;
      if (!screenshot.empty() && !r.screenshot.empty()) {
        std::ofstream(screenshot, std::ios::binary) << r.screenshot;
      }
      out = mk::guest::to_json(r);
    }
    // A console tail may end inside a UTF-8 character, and a guest may print any bytes.
    std::cout << out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return ok ? 0 : 1;
  } catch (const mk::UsageError& e) {
    std::cerr << "mk-guest: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "mk-guest: " << e.what() << "\n";
    return 1;
  }
}
