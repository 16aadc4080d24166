// Strict fakes of the OMA-side collaborators of a cutover (source power through the
// VMA, the final pass, NBD exports), for tests against the CloudStack simulator.
//
// Strict: a call that the real collaborator would refuse or that breaks the protocol
// (powering off a VM that is off, a final pass while the source runs, removing an
// export that does not exist, exporting a device path that is not there) is a test
// failure, not silently accepted. Every call is appended to a shared event list so
// tests can check the order. Failures are injected per method. Not thread-safe.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cloudstack/vm_builder.h"

namespace mk::cloudstack::test {

using Events = std::vector<std::string>;

class FakeSourcePower : public SourcePower {
 public:
  explicit FakeSourcePower(Events& events) : events_(events) {}
  bool on = true;
  bool guest_obeys_shutdown = true;  // false: only power_off stops it
  bool fail_power_on = false;

  bool is_powered_on(const std::string&) override { return on; }
  void shutdown_guest(const std::string& vm) override {
    events_.push_back("shutdown_guest " + vm);
    if (!on) ADD_FAILURE() << "shutdown_guest on a VM that is off";
    if (guest_obeys_shutdown) on = false;
  }
  void power_off(const std::string& vm) override {
    events_.push_back("power_off " + vm);
    if (!on) ADD_FAILURE() << "power_off on a VM that is off";
    on = false;
  }
  void power_on(const std::string& vm) override {
    events_.push_back("power_on " + vm);
    if (on) ADD_FAILURE() << "power_on on a VM that is on";
    if (fail_power_on) throw Error("VMA: power on refused");
    on = true;
  }

 private:
  Events& events_;
};

class FakeFinalPass : public FinalPass {
 public:
  FakeFinalPass(Events& events, FakeSourcePower& power) : events_(events), power_(power) {}
  std::string fail_with;  // non-empty: the pass fails with this message

  void run(const std::string& vm) override {
    events_.push_back("final_pass " + vm);
    if (power_.on) ADD_FAILURE() << "final pass while the source is still running";
    if (!fail_with.empty()) throw Error(fail_with);
  }

 private:
  Events& events_;
  FakeSourcePower& power_;
};

class FakeExports : public Exports {
 public:
  explicit FakeExports(Events& events) : events_(events) {}
  std::map<std::string, std::pair<std::string, std::string>> current;  // disk -> volume, device

  void remove(const DiskRef& disk) override {
    events_.push_back("remove_export " + disk.disk_key);
    if (!current.erase(disk.disk_key)) ADD_FAILURE() << "removing a missing export " << disk.disk_key;
  }
  void ensure(const DiskRef& disk, const std::string& volume_id,
                const std::string& device) override {
    events_.push_back("ensure_export " + disk.disk_key);
    auto it = current.find(disk.disk_key);
    if (it != current.end() && it->second != std::make_pair(volume_id, device)) {
      ADD_FAILURE() << "export of " << disk.disk_key << " exists for another volume or device";
    }
    if (!std::filesystem::exists(device)) ADD_FAILURE() << "exporting a missing device " << device;
    current[disk.disk_key] = {volume_id, device};
  }

 private:
  Events& events_;
};

}  // namespace mk::cloudstack::test
