#include "cloudstack/vm_builder.h"

#include <fmt/format.h>

#include <algorithm>

#include "cloudstack/names.h"
#include "common/log.h"

namespace mk::cloudstack {

const SourceDisk& root_disk(const SourceVm& vm) {
  if (vm.disks.empty()) throw UsageError(fmt::format("VM {} has no disks", vm.name));
  if (vm.guest.boot_disk >= 0 && vm.guest.boot_disk < static_cast<int>(vm.disks.size())) {
    // boot_disk indexes the disks in unit order; vm.disks may be in any order.
    std::vector<const SourceDisk*> by_unit;
    for (const auto& d : vm.disks) by_unit.push_back(&d);
    std::stable_sort(by_unit.begin(), by_unit.end(), [](auto* a, auto* b) { return a->unit < b->unit; });
    return *by_unit[static_cast<std::size_t>(vm.guest.boot_disk)];
  }
  for (const auto& d : vm.disks) {
    if (d.os_disk) return d;
  }
  return vm.disks.front();
}

std::vector<SourceDisk> unit_order(const SourceVm& vm) {
  std::vector<SourceDisk> disks = vm.disks;
  std::stable_sort(disks.begin(), disks.end(), [](const SourceDisk& a, const SourceDisk& b) { return a.unit < b.unit; });
  return disks;
}

std::vector<SourceDisk> attach_order(const SourceVm& vm) {
  const std::string root = root_disk(vm).disk.disk_key;
  std::vector<SourceDisk> disks = vm.disks;
  std::stable_sort(disks.begin(), disks.end(), [&root](const SourceDisk& a, const SourceDisk& b) {
    bool ar = a.disk.disk_key == root, br = b.disk.disk_key == root;
    if (ar != br) return ar;
    return a.unit < b.unit;
  });
  return disks;
}

std::string DeployRequest::fit() const {
  std::string out;
  if (!boot.boot_type.empty()) out = fmt::format("{} {} ({})", boot.boot_type, boot.boot_mode, boot.why);
  if (!os_type.id.empty()) {
    out += fmt::format("{}OS type {} ({})", out.empty() ? "" : ", ", os_type.description, os_type.how);
  } else if (!os_type.how.empty() && os_type.how != "the guest was not inspected") {
    out += (out.empty() ? "" : ", ") + os_type.how;
  }
  return out;
}

VmBuilder::VmBuilder(const Client& client, const CloudStackVolumes& volumes, TargetSettings target)
    : client_(client), volumes_(volumes), target_(std::move(target)) {}

void VmBuilder::check(const SourceVm& vm) const {
  std::vector<std::string> problems;
  for (const auto& nic : vm.nics) {
    if (!target_.networks.count(nic.network)) {
      problems.push_back(fmt::format("source network '{}' (NIC {}) has no CloudStack network in "
                                     "the mapping table",
                                     nic.network, nic.mac));
    }
  }
  if (vm.nics.empty()) problems.push_back("the VM has no NIC; CloudStack needs at least one");
  std::map<std::string, std::vector<const SourceNic*>> by_network;
  for (const auto& nic : vm.nics) {
    auto it = target_.networks.find(nic.network);
    if (it != target_.networks.end()) by_network[it->second.network_id].push_back(&nic);
  }
  for (const auto& [network, nics] : by_network) {
    if (nics.size() < 2) continue;
    std::string which;
    for (const auto* n : nics) which += fmt::format("{}{} on '{}'", which.empty() ? "" : ", ", n->mac, n->network);
    problems.push_back(fmt::format("NICs {} all map to CloudStack network {}, and CloudStack gives a VM one NIC per "
                                   "network: map those port groups to different networks",
                                   which, network));
  }
  auto os = std::count_if(vm.disks.begin(), vm.disks.end(), [](auto& d) { return d.os_disk; });
  if (os != 1) problems.push_back(fmt::format("{} disks are marked as the OS disk; exactly one must be", os));
  if (vm.guest.boot_disk >= static_cast<int>(vm.disks.size())) {
    problems.push_back(fmt::format("inspection put the root filesystem on disk {}, but the VM has {} disks",
                                   vm.guest.boot_disk, vm.disks.size()));
  }
  for (const auto& d : vm.disks) {
    if (d.volume_id.empty()) {
      problems.push_back(fmt::format("disk {} has no CloudStack volume yet", d.disk.disk_key));
      continue;
    }
    try {
      volumes_.require_owned(d.volume_id, d.disk);
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  if (!problems.empty()) {
    std::string text;
    for (const auto& p : problems) text += "\n  - " + p;
    throw UsageError(fmt::format("VM {} ({}) cannot be built in CloudStack:{}", vm.name,
                                 vm.vm_uuid, text));
  }
}

DeployRequest VmBuilder::request_for(const SourceVm& vm, const std::string& name,
                                     const std::string& network_override) const {
  DeployRequest r;
  r.name = name;
  r.display_name = vm.name;
  r.cpus = vm.cpus;
  r.memory_mib = vm.memory_mib;
  r.template_id = choose_template(target_.os_templates, vm.guest, target_.template_id);
  r.boot = choose_boot(vm.firmware, vm.secure_boot, vm.guest);
  if (vm.guest.known()) {
    r.os_type = choose_os_type(client_.list("listOsTypes", "ostype"), vm.guest);
  } else {
    r.os_type.how = "the guest was not inspected";
  }
  if (!network_override.empty()) {
    r.nics.emplace_back(network_override, "");  // one NIC per network: one on the test network
    return r;
  }
  for (const auto& nic : vm.nics) {
    const NetworkMapping& m = target_.networks.at(nic.network);
    r.nics.emplace_back(m.network_id, m.keep_mac ? nic.mac : "");
  }
  return r;
}

std::string VmBuilder::free_host_name(const SourceVm& vm) const {
  std::string name = host_name_for(vm.name, vm.vm_uuid);
  Json reply = client_.call("listVirtualMachines", {{"name", name}, {"listall", "true"}});
  for (const auto& other : json_array(reply, "virtualmachine")) {
    if (json_text(other, "name") == name) return disambiguated_host_name(name, vm.vm_uuid);
  }
  return name;
}

Json service_offering(const Client& client, const std::string& id) {
  Json reply = client.call("listServiceOfferings", {{"id", id}});
  Json offering = json_first(reply, "serviceoffering");
  if (offering.is_null()) {
    throw Error(fmt::format("service offering {} does not exist; check the CloudStack settings", id));
  }
  return offering;
}

bool can_expunge(const Client& client) {
  for (const auto& a : client.list("listAccounts", "account")) {
    int64_t type = json_integer(a, "accounttype", 0);
    if (type == 1 || type == 2 || type == 3) return true;  // root, domain, resource-domain admin
  }
  return json_bool(json_object(client.call("listCapabilities"), "capability"), "allowuserexpungerecovervm", false);
}

std::string VmBuilder::deploy(const DeployRequest& r, std::string& vm_id) const {
  Params p{{"serviceofferingid", target_.service_offering_id},
           {"templateid", r.template_id.empty() ? target_.template_id : r.template_id},
           {"zoneid", target_.zone_id},
           {"name", r.name},
           {"displayname", r.display_name},
           {"startvm", "false"}};
  Json offering = service_offering(client_, target_.service_offering_id);
  if (json_bool(offering, "iscustomized", false)) {
    p["details[0].cpuNumber"] = std::to_string(r.cpus);
    p["details[0].memory"] = std::to_string(r.memory_mib);
    if (!offering.contains("cpuspeed")) p["details[0].cpuSpeed"] = std::to_string(target_.cpu_speed_mhz);
  }
  if (!r.boot.boot_type.empty()) {
    p["boottype"] = r.boot.boot_type;
    p["bootmode"] = r.boot.boot_mode;  // UEFI needs one (CloudStack fails without); BIOS takes LEGACY
  }
  if (r.nics.empty()) throw UsageError(fmt::format("VM {}: no NIC to deploy with", r.display_name));
  // The first NIC here; the others one by one afterwards, so that none collapses.
  p["iptonetworklist[0].networkid"] = r.nics[0].first;
  if (!r.nics[0].second.empty()) p["iptonetworklist[0].mac"] = r.nics[0].second;
  Json started = client_.call("deployVirtualMachine", p);
  vm_id = json_text(started, "id");
  Json result = client_.wait_for_job("deployVirtualMachine", json_text(started, "jobid"));
  std::string id = json_text(json_object(result, "virtualmachine"), "id");
  if (id.empty()) throw Error(fmt::format("deployVirtualMachine of {} returned no VM id", r.name));
  vm_id = id;
  set_os_type(id, r);
  add_nics(id, r);
  return id;
}

std::string VmBuilder::find_deployed(const DeployRequest& r) const {
  Json reply = client_.call("listVirtualMachines", {{"name", r.name}, {"listall", "true"}});
  for (const auto& vm : json_array(reply, "virtualmachine")) {
    std::string state = json_text(vm, "state");
    if (json_text(vm, "name") != r.name || json_text(vm, "displayname") != r.display_name) continue;
    if (state == "Destroyed" || state == "Expunging") continue;
    return json_text(vm, "id");
  }
  return "";
}

void VmBuilder::set_os_type(const std::string& vm_id, const DeployRequest& r) const {
  if (r.os_type.id.empty()) return;
  // deployVirtualMachine takes no OS type (the template's is the VM's): set it while the
  // VM is still stopped.
  Json vm = json_first(client_.call("listVirtualMachines", {{"id", vm_id}, {"listall", "true"}}), "virtualmachine");
  if (json_text(vm, "guestosid") == r.os_type.id) return;  // resumed
  try {
    client_.call("updateVirtualMachine", {{"id", vm_id}, {"ostypeid", r.os_type.id}});
  } catch (const Error& e) {
    throw Error(fmt::format("setting the OS type of VM {} to {} ({}): {}", r.name, r.os_type.description,
                            r.os_type.id, e.what()));
  }
}

void VmBuilder::add_nics(const std::string& vm_id, const DeployRequest& r) const {
  Json reply = client_.call("listVirtualMachines", {{"id", vm_id}, {"listall", "true"}});
  std::vector<std::string> present;
  for (const auto& vm : json_array(reply, "virtualmachine")) {
    for (const auto& nic : json_array(vm, "nic")) present.push_back(json_text(nic, "networkid"));
  }
  for (size_t i = 1; i < r.nics.size(); ++i) {
    const auto& [network, mac] = r.nics[i];
    if (std::find(present.begin(), present.end(), network) != present.end()) continue;  // resumed
    Params p{{"virtualmachineid", vm_id}, {"networkid", network}};
    if (!mac.empty()) p["macaddress"] = mac;
    try {
      client_.call_async("addNicToVirtualMachine", p);
    } catch (const Error& e) {
      throw Error(fmt::format("adding NIC {} ({}) on network {} to VM {}: {}", i + 1, mac.empty() ? "any MAC" : mac,
                              network, r.name, e.what()));
    }
  }
}

void VmBuilder::replace_root(const std::string& vm_id, const SourceVm& vm) const {
  // The template's root disk: found on the VM we just deployed, never one of ours.
  for (const auto& v : client_.list("listVolumes", "volume",
                                    {{"virtualmachineid", vm_id}, {"type", "ROOT"},
                                     {"listall", "true"}})) {
    Volume root = volume_from_json(v);
    bool ours = std::any_of(vm.disks.begin(), vm.disks.end(),
                            [&](const SourceDisk& d) { return d.volume_id == root.id; });
    if (ours) continue;  // resumed after the OS disk was attached
    client_.call_async("detachVolume", {{"id", root.id}});
    try {
      client_.call("deleteVolume", {{"id", root.id}});
    } catch (const Error&) {
      // Put it back, so that tearing the VM down (destroy with expunge) removes it too.
      try {
        client_.call_async("attachVolume",
                           {{"id", root.id}, {"virtualmachineid", vm_id}, {"deviceid", "0"}});
      } catch (const Error& again) {
        log::error("template root volume {} of VM {} is detached and could not be deleted nor "
                   "re-attached: {}; delete it by hand",
                   root.id, vm_id, again.what());
      }
      throw;
    }
  }
  const SourceDisk os = root_disk(vm);
  Volume current = volumes_.get(os.volume_id);
  if (current.virtual_machine_id == vm_id) return;
  volumes_.attach_to_vm(os.volume_id, os.disk, vm_id, 0);
}

void VmBuilder::attach_data_disks(const std::string& vm_id, const SourceVm& vm) const {
  const std::string root = root_disk(vm).disk.disk_key;
  for (const auto& d : attach_order(vm)) {
    if (d.disk.disk_key == root) continue;
    if (volumes_.get(d.volume_id).virtual_machine_id == vm_id) continue;
    volumes_.attach_to_vm(d.volume_id, d.disk, vm_id, std::nullopt);
  }
}

void VmBuilder::detach_volume(const SourceDisk& d) const { volumes_.detach(d.volume_id, d.disk); }

void VmBuilder::start(const std::string& vm_id) const {
  client_.call_async("startVirtualMachine", {{"id", vm_id}});
}

std::string VmBuilder::tear_down(const std::string& vm_id, const SourceVm& vm) const {
  Json reply = client_.call("listVirtualMachines", {{"id", vm_id}, {"listall", "true"}});
  Json found = json_first(reply, "virtualmachine");
  if (found.is_null()) return "";
  std::string state = json_text(found, "state");
  if (state == "Destroyed" || state == "Expunging") return "";  // destroyed by an earlier run
  if (state == "Running") {
    client_.call_async("stopVirtualMachine", {{"id", vm_id}, {"forced", "true"}});
  }
  // Every volume that can be is detached (and so can go back to the OMA); the VM is not
  // destroyed while one of ours is still on it: destroying takes its root disk along.
  std::string failed;
  for (const auto& d : vm.disks) {
    try {
      if (volumes_.get(d.volume_id).virtual_machine_id == vm_id) volumes_.detach(d.volume_id, d.disk);
    } catch (const std::exception& e) {
      if (failed.empty()) failed = e.what();
    }
  }
  if (!failed.empty()) {
    throw Error(fmt::format("{}; VM {} was not destroyed, so that it cannot take a volume of ours with it", failed,
                            vm_id));
  }
  if (can_expunge(client_)) {
    client_.call_async("destroyVirtualMachine", {{"id", vm_id}, {"expunge", "true"}});
    return "";
  }
  client_.call_async("destroyVirtualMachine", {{"id", vm_id}});
  std::string note = fmt::format(
      "VM {} was destroyed but not expunged: this account may not expunge (not an admin, and "
      "allow.user.expunge.recover.vm is off); CloudStack expunges it after expunge.delay, or an admin can now",
      vm_id);
  log::warn("{}", note);
  return note;
}

std::string VmBuilder::return_to_oma(const std::vector<SourceDisk>& disks,
                                     Exports& exports) const {
  std::string first_error;
  for (const auto& d : disks) {
    try {
      std::string device = volumes_.attach_to_oma(d.volume_id, d.disk);
      exports.ensure(d.disk, d.volume_id, device);
    } catch (const std::exception& e) {
      log::error("returning volume {} of VM {} disk {} to the OMA: {}", d.volume_id,
                 d.disk.vm_uuid, d.disk.disk_key, e.what());
      if (first_error.empty()) first_error = e.what();
    }
  }
  return first_error;
}

}  // namespace mk::cloudstack
