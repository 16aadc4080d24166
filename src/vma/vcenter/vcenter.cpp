#include "vma/vcenter/vcenter.h"

#include <fmt/format.h>

#include <algorithm>
#include <tuple>

#include "common/log.h"
#include "vsphere/preflight.h"
#include "vsphere/vm_ops.h"

namespace mk::vma {
namespace {

std::string host_of(const std::string& url) {
  auto start = url.find("://");
  std::string rest = start == std::string::npos ? url : url.substr(start + 3);
  return rest.substr(0, rest.find('/'));
}

}  // namespace

VCenter::VCenter(VcenterConfig config) : config_(std::move(config)), host_(host_of(config_.connect.url)) {
  if (config_.snapshot_prefix.size() < 4) throw UsageError("the snapshot prefix must have at least 4 characters");
}

std::shared_ptr<vsphere::Session> VCenter::session() {
  std::lock_guard lock(mu_);
  if (!session_) {
    try {
      session_ = vsphere::Session::connect(config_.connect);
      log::info("vCenter {}: connected as {}", host_, config_.connect.user);
    } catch (const std::exception& e) {
      throw Error(fmt::format("vCenter {} cannot be reached or refused the login: {}", host_, e.what()));
    }
  }
  return session_;
}

std::string VCenter::check(std::chrono::seconds wait) {
  std::shared_future<std::string> probe;
  {
    std::lock_guard lock(probe_mu_);
    bool running = probe_.valid() && probe_.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
    if (!running) {
      probe_ = std::async(std::launch::async, [this]() -> std::string {
                 try {
                   session()->invoke("CurrentTime", "<_this type=\"ServiceInstance\">ServiceInstance</_this>");
                   return "";
                 } catch (const std::exception& e) {
                   return e.what();
                 }
               }).share();
    }
    probe = probe_;
  }
  // A hung vCenter must not hang the health route (the OMA asks it with a short timeout).
  if (probe.wait_for(wait) != std::future_status::ready) {
    return fmt::format("vCenter {} did not answer within {} s", host_, wait.count());
  }
  return probe.get();
}

protocol::Discovery VCenter::discover() {
  auto s = session();
  auto datacenters = vsphere::vm_datacenters(*s);
  protocol::Discovery out{host_, {}};
  for (auto& vm : vsphere::list_vms(*s)) {
    if (!vm.is_template) out.vms.push_back(discovered(vm, datacenters[vm.ref.value]));
  }
  return out;
}

protocol::DiscoveredVm VCenter::describe(const std::string& vm_id) {
  vsphere::VmInfo vm = find_vm(vm_id);
  return discovered(vm, vsphere::datacenter_of(*session(), vm.ref));
}

protocol::DiscoveredVm VCenter::discovered(const vsphere::VmInfo& vm, const std::string& datacenter) const {
  auto power = protocol::parse_field<protocol::PowerState>(vm.power_state, "VM " + vm.name + " power state");
  protocol::DiscoveredVm d{vm.instance_uuid, vm.name, datacenter, power, vm.guest_id,
                           vm.cpus,          vm.memory_mb, {}, {}, findings_of(vm)};
  // The firmware as the OMA builds the CloudStack VM from it (another value: not known).
  if (vm.firmware == "bios" || vm.firmware == "efi") d.firmware = vm.firmware;
  d.secure_boot = vm.firmware == "efi" && vm.secure_boot;
  // Units are positions: the boot disk first (the OMA builds the VM with unit 0 as its
  // root disk), then controller order, so that two controllers' unit 0 differ.
  auto disks = vm.disks;
  int boot = vsphere::boot_disk_key(vm);
  std::stable_sort(disks.begin(), disks.end(), [boot](const auto& a, const auto& b) {
    return std::tuple(a.key != boot, a.bus_number, a.controller_key, a.unit_number) <
           std::tuple(b.key != boot, b.bus_number, b.controller_key, b.unit_number);
  });
  for (size_t i = 0; i < disks.size(); ++i) {
    std::string label = disks[i].label.empty() ? fmt::format("Hard disk {}", i + 1) : disks[i].label;
    d.disks.push_back({protocol::DiskKey(disks[i].key), static_cast<int64_t>(i), label,
                       static_cast<int64_t>(disks[i].capacity_bytes)});
  }
  for (auto& n : vm.nics) d.nics.push_back({std::to_string(n.key), n.mac, n.network});
  return d;
}

vsphere::VmInfo VCenter::find_vm(const std::string& vm_id) {
  auto s = session();
  auto ref = vsphere::find_vm_by_instance_uuid(*s, vm_id);
  if (!ref) {
    throw VmNotFound(fmt::format("vCenter {}: no VM with instance UUID {} (deleted, or not visible to user {})",
                                 host_, vm_id, config_.connect.user));
  }
  return vsphere::describe_vm(*s, *ref);
}

std::vector<protocol::PreflightFinding> VCenter::preflight(const std::string& vm_id) {
  return findings_of(find_vm(vm_id));
}

std::vector<protocol::PreflightFinding> VCenter::findings_of(const vsphere::VmInfo& vm) const {
  // The same rules a pass applies before it touches the VM (VmwareSource::open_pass).
  std::vector<protocol::PreflightFinding> out;
  for (const auto& f : vsphere::preflight(vm, {config_.snapshot_prefix, source::VmwareSourceOptions{}.enable_cbt})) {
    std::optional<protocol::DiskKey> key;
    if (f.disk_key) key = protocol::DiskKey(f.disk_key);
    out.push_back({f.code, key, f.problem, f.remedy, f.text()});
  }
  return out;
}

protocol::PowerReply VCenter::power(const std::string& vm_id, protocol::PowerAction action,
                                    std::chrono::seconds timeout) {
  using protocol::PowerAction;
  using protocol::PowerState;
  auto s = session();
  vsphere::VmInfo vm = find_vm(vm_id);
  auto state_of = [&](const std::string& word) {
    return protocol::parse_field<PowerState>(word, fmt::format("VM {} power state", vm.name));
  };
  protocol::PowerReply out{vm_id, state_of(vm.power_state), false};
  switch (action) {
    case PowerAction::On:
      if (out.power_state != PowerState::PoweredOn) vsphere::power_on(*s, vm);
      break;
    case PowerAction::Off:
      if (out.power_state != PowerState::PoweredOff) vsphere::power_off(*s, vm);
      break;
    case PowerAction::Shutdown:
      if (out.power_state != PowerState::PoweredOff) out.forced = !vsphere::shutdown_guest(*s, vm, timeout);
      break;
  }
  out.power_state = state_of(vsphere::power_state(*s, vm.ref));
  PowerState want = action == PowerAction::On ? PowerState::PoweredOn : PowerState::PoweredOff;
  if (out.power_state != want) {
    throw Error(fmt::format("VM {} ({}): power {} finished but the VM is {}", vm.name, vm_id, enum_name(action),
                            enum_name(out.power_state)));
  }
  log::info("VM {} ({}): power {}: {}{}", vm.name, vm_id, enum_name(action), enum_name(out.power_state),
            out.forced ? " (forced)" : "");
  return out;
}

source::VmwareSourceOptions VCenter::source_options(const std::string& work_dir) {
  source::VmwareSourceOptions o;
  o.snapshot_prefix = config_.snapshot_prefix;
  o.owner = config_.snapshot_owner;
  o.targets_may_hold_data = true;  // a job's volume may be reused: see VmwareSourceOptions
  o.work_dir = work_dir;
  o.vddk = config_.vddk;
  if (!config_.flat_datastores.empty()) {
    o.flat_file_for = [this](const vsphere::DiskInfo& d) { return flat_file_for(d); };
  }
  return o;
}

std::unique_ptr<source::VmwareSource> VCenter::make_source(const std::string& work_dir) {
  return std::make_unique<source::VmwareSource>(session(), config_.connect, source_options(work_dir));
}

int VCenter::remove_our_snapshots(const std::string& vm_id) {
  vsphere::VmInfo vm = find_vm(vm_id);
  // work_dir "/": no reader is started.
  return source::VmwareSource(session(), config_.connect, source_options("/")).remove_leftover_snapshots(vm);
}

int VCenter::remove_all_our_snapshots(const std::function<std::unique_lock<std::mutex>(const std::string&)>& lock_vm,
                                      std::vector<std::string>& errors, const std::set<std::string>& keep) {
  return source::VmwareSource(session(), config_.connect, source_options("/"))
      .remove_all_leftover_snapshots(lock_vm, errors, keep);
}

std::string VCenter::flat_file_for(const vsphere::DiskInfo& disk) const {
  return flat_file_path(config_.flat_datastores, disk.file_name);
}

std::string flat_file_path(const std::map<std::string, std::string>& datastores, const std::string& file_name) {
  auto close = file_name.find(']');
  if (file_name.empty() || file_name[0] != '[' || close == std::string::npos) {
    throw Error(fmt::format("disk file \"{}\" is not \"[datastore] path.vmdk\"", file_name));
  }
  std::string ds = file_name.substr(1, close - 1);
  std::string rel = file_name.substr(close + 1);
  while (!rel.empty() && rel[0] == ' ') rel.erase(0, 1);
  if (rel.size() < 6 || !rel.ends_with(".vmdk") || rel.find("..") != std::string::npos || rel[0] == '/') {
    throw Error(fmt::format("disk file \"{}\": not a .vmdk path inside its datastore", file_name));
  }
  auto it = datastores.find(ds);
  if (it == datastores.end()) {
    throw Error(fmt::format("disk file \"{}\": datastore {} is not mounted on the VMA (no --lab-flat-datastore {}=DIR)",
                            file_name, ds, ds));
  }
  return it->second + "/" + rel.substr(0, rel.size() - 5) + "-flat.vmdk";
}

}  // namespace mk::vma
