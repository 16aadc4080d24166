#include "vsphere/inventory.h"

#include <fmt/format.h>

#include <map>
#include <tuple>

namespace mk::vsphere {
namespace {

const std::vector<std::string> kVmPaths = {
    "name", "config.uuid", "config.instanceUuid", "runtime.powerState", "config.guestId", "config.guestFullName",
    "config.hardware.numCPU", "config.hardware.memoryMB", "config.firmware", "config.changeTrackingEnabled",
    "config.template", "config.hardware.device", "runtime.connectionState", "runtime.consolidationNeeded",
    "config.keyId", "capability.changeTrackingSupported", "config.version", "config.bootOptions.bootOrder",
    "config.bootOptions.efiSecureBootEnabled",
    "snapshot"};

std::string path_set(const std::vector<std::string>& paths) {
  std::string out;
  for (auto& p : paths) out += fmt::format("<pathSet>{}</pathSet>", xml::escape(p));
  return out;
}

int int_of(const xml::Node& n, const std::string& what, int fallback = 0) {
  if (!n) return fallback;
  return static_cast<int>(xml::to_int(n.text(), what));
}

// Runs RetrievePropertiesEx and follows ContinueRetrievePropertiesEx tokens. maxObjects
// bounds each answer, so that a large inventory comes in pages instead of one document
// the server (and this client) must hold whole.
std::vector<ObjectProperties> collect(Session& s, const std::string& spec_set, std::vector<xml::Document>& keep) {
  std::vector<ObjectProperties> out;
  const Moref& pc = s.service().property_collector;
  xml::Document doc;
  xml::Node rv = s.call("RetrievePropertiesEx",
                        pc.xml("_this") + spec_set +
                            fmt::format("<options><maxObjects>{}</maxObjects></options>", s.page_size()),
                        doc);
  for (int page = 0;; ++page) {
    keep.push_back(std::move(doc));
    if (!rv) break;  // no object matched
    for (auto& o : rv.children("objects")) {
      ObjectProperties op;
      op.ref = Moref::from(o.child("obj"));
      for (auto& ps : o.children("propSet")) op.props.emplace_back(ps.text_of("name"), ps.child("val"));
      // missingSet (a property the server could not read) leaves the property absent.
      out.push_back(std::move(op));
    }
    std::string token = rv.text_of("token");
    if (token.empty()) break;
    if (page > 100000) throw Error(fmt::format("vSphere {}: property collector keeps paging; giving up", s.host()));
    rv = s.call("ContinueRetrievePropertiesEx",
                pc.xml("_this") + fmt::format("<token>{}</token>", xml::escape(token)), doc);
  }
  return out;
}

bool bool_of(const xml::Node& n) { return n && n.text() == "true"; }

VmInfo to_vm(const ObjectProperties& o) {
  VmInfo vm;
  vm.ref = o.ref;
  std::string ctx = fmt::format("VM {}", o.ref.value);
  vm.name = o.get("name").text();
  vm.bios_uuid = o.get("config.uuid").text();
  vm.instance_uuid = o.get("config.instanceUuid").text();
  vm.power_state = o.get("runtime.powerState").text();
  vm.guest_id = o.get("config.guestId").text();
  vm.guest_full_name = o.get("config.guestFullName").text();
  vm.cpus = int_of(o.get("config.hardware.numCPU"), ctx + " numCPU");
  vm.memory_mb = int_of(o.get("config.hardware.memoryMB"), ctx + " memoryMB");
  vm.firmware = o.get("config.firmware").text();
  vm.secure_boot = bool_of(o.get("config.bootOptions.efiSecureBootEnabled"));
  vm.cbt_enabled = bool_of(o.get("config.changeTrackingEnabled"));
  vm.is_template = bool_of(o.get("config.template"));
  vm.connection_state = o.get("runtime.connectionState").text();
  vm.consolidation_needed = bool_of(o.get("runtime.consolidationNeeded"));
  vm.encrypted = static_cast<bool>(o.get("config.keyId"));
  if (xml::Node cbt = o.get("capability.changeTrackingSupported")) vm.cbt_supported = cbt.text() == "true";
  vm.hardware_version = o.get("config.version").text();
  vm.has_config = !vm.instance_uuid.empty() || static_cast<bool>(o.get("config.hardware.device"));
  if (xml::Node devices = o.get("config.hardware.device")) parse_devices(devices, vm);
  if (xml::Node order = o.get("config.bootOptions.bootOrder")) {
    for (auto& dev : order.element_children()) {
      if (dev.xsi_type() == "VirtualMachineBootOptionsBootableDiskDevice") {
        vm.boot_order_disks.push_back(int_of(dev.child("deviceKey"), ctx + " bootOrder deviceKey"));
      }
    }
  }
  if (xml::Node snap = o.get("snapshot")) vm.snapshots = parse_snapshot_tree(snap);
  return vm;
}

void walk_tree(const xml::Node& list_parent, const char* child_name, std::vector<SnapshotRef>& out, int depth) {
  if (depth > 1000) throw Error("snapshot tree deeper than 1000 levels; refusing it");
  for (auto& t : list_parent.children(child_name)) {
    out.push_back({Moref::from(t.child("snapshot")), t.text_of("name"), t.text_of("description")});
    walk_tree(t, "childSnapshotList", out, depth + 1);
  }
}

// Where a controller comes in the firmware's search for a boot disk (lower first).
int controller_rank(const std::string& type) {
  if (type == "VirtualIDEController") return 0;
  if (type == "VirtualAHCIController" || type == "VirtualSATAController") return 1;
  if (type == "VirtualNVMEController") return 2;
  return 3;  // SCSI: LSI Logic, LSI Logic SAS, ParaVirtual, BusLogic
}

// Replaces distributed port group keys by their names (cached across VMs).
void resolve_networks(Session& s, VmInfo& vm, std::map<std::string, std::string>& cache) {
  for (auto& nic : vm.nics) {
    if (nic.network_ref.empty()) continue;
    auto it = cache.find(nic.network_ref.value);
    if (it == cache.end()) {
      std::vector<xml::Document> keep;
      std::string name = retrieve(s, nic.network_ref, {"name"}, keep).get("name").text();
      it = cache.emplace(nic.network_ref.value, name.empty() ? nic.network_ref.value : name).first;
    }
    nic.network = it->second;
  }
}

std::optional<Moref> moref_or_none(const xml::Node& rv) {
  if (!rv || rv.text().empty()) return std::nullopt;
  return Moref::from(rv);
}

}  // namespace

xml::Node ObjectProperties::get(const std::string& name) const {
  for (auto& [n, v] : props) {
    if (n == name) return v;
  }
  return xml::Node();
}

std::string datastore_of(const std::string& file_name) {
  if (file_name.size() < 3 || file_name[0] != '[' || file_name.find(']') == std::string::npos) {
    throw Error(fmt::format("disk file name \"{}\" is not of the form \"[datastore] path\"", file_name.substr(0, 200)));
  }
  return file_name.substr(1, file_name.find(']') - 1);
}

void parse_devices(const xml::Node& devices, VmInfo& vm) {
  std::map<int, std::pair<std::string, int>> controllers;  // key -> (type, bus)
  std::map<int, std::string> shared_bus;                   // SCSI controller key -> sharedBus
  std::string ctx = fmt::format("VM {} ({}) device", vm.name, vm.ref.value);
  for (auto& d : devices.children("VirtualDevice")) {
    std::string type = d.xsi_type();
    int key = int_of(d.child("key"), ctx + " key", -1);
    if (xml::Node bus = d.child("busNumber")) {
      controllers[key] = {type, int_of(bus, ctx + " busNumber")};
      if (xml::Node shared = d.child("sharedBus")) shared_bus[key] = shared.text();
    }
    if (type == "VirtualDisk") {
      DiskInfo disk;
      disk.key = key;
      disk.label = d.child("deviceInfo").text_of("label");
      disk.unit_number = int_of(d.child("unitNumber"), ctx + " unitNumber", -1);
      disk.controller_key = int_of(d.child("controllerKey"), ctx + " controllerKey", 0);
      xml::Node bytes = d.child("capacityInBytes");
      int64_t cap = bytes ? xml::to_int(bytes.text(), ctx + " capacityInBytes")
                          : xml::to_int(d.text_of("capacityInKB", "0"), ctx + " capacityInKB") * 1024;
      if (cap < 0) throw Error(fmt::format("{} {}: negative capacity {}", ctx, key, cap));
      disk.capacity_bytes = static_cast<uint64_t>(cap);
      xml::Node backing = d.child("backing");
      disk.file_name = backing.text_of("fileName");
      if (!disk.file_name.empty()) disk.datastore = datastore_of(disk.file_name);
      if (xml::Node ds = backing.child("datastore")) disk.datastore_ref = Moref::from(ds);
      disk.thin = bool_of(backing.child("thinProvisioned"));
      disk.change_id = backing.text_of("changeId");
      disk.backing = backing.xsi_type();
      disk.disk_mode = backing.text_of("diskMode");
      disk.sharing = backing.text_of("sharing");
      disk.compatibility_mode = backing.text_of("compatibilityMode");
      disk.encrypted = static_cast<bool>(backing.child("keyId"));
      vm.disks.push_back(std::move(disk));
    } else if (xml::Node mac = d.child("macAddress")) {
      NicInfo nic;
      nic.key = key;
      nic.mac = mac.text();
      nic.adapter = type;
      xml::Node backing = d.child("backing");
      nic.network = backing.text_of("deviceName");
      if (nic.network.empty()) {
        // A distributed port group: the backing has only its key; its name is looked up.
        std::string key = backing.child("port").text_of("portgroupKey");
        if (!key.empty()) nic.network_ref = Moref{"DistributedVirtualPortgroup", key};
        nic.network = key;
      }
      if (nic.network.empty()) nic.network = backing.text_of("opaqueNetworkId");
      vm.nics.push_back(std::move(nic));
    }
  }
  for (auto& disk : vm.disks) {
    auto it = controllers.find(disk.controller_key);
    if (it != controllers.end()) {
      disk.controller = it->second.first;
      disk.bus_number = it->second.second;
    }
    if (auto sb = shared_bus.find(disk.controller_key); sb != shared_bus.end()) disk.controller_sharing = sb->second;
  }
}

std::vector<SnapshotRef> parse_snapshot_tree(const xml::Node& snapshot_info) {
  std::vector<SnapshotRef> out;
  walk_tree(snapshot_info, "rootSnapshotList", out, 0);
  return out;
}

int boot_disk_key(const VmInfo& vm) {
  for (int key : vm.boot_order_disks) {
    for (auto& d : vm.disks) {
      if (d.key == key) return key;
    }
  }
  const DiskInfo* best = nullptr;
  auto order = [](const DiskInfo& d) {
    return std::tuple(controller_rank(d.controller), d.bus_number, d.controller_key, d.unit_number);
  };
  for (auto& d : vm.disks) {
    if (!best || order(d) < order(*best)) best = &d;
  }
  return best ? best->key : -1;
}

ObjectProperties retrieve(Session& s, const Moref& obj, const std::vector<std::string>& paths,
                          std::vector<xml::Document>& keep) {
  std::string spec = fmt::format("<specSet><propSet><type>{}</type>{}</propSet><objectSet>{}</objectSet></specSet>",
                                 xml::escape(obj.type), path_set(paths), obj.xml("obj"));
  auto objs = collect(s, spec, keep);
  if (objs.empty()) {
    throw Error(fmt::format("vSphere {}: {} {} not found (deleted, or no permission to read it)", s.host(), obj.type,
                            obj.value));
  }
  return std::move(objs[0]);
}

// Objects of `type` below `container` (recursively) with their `paths`, through a
// ContainerView that is destroyed afterwards.
static std::vector<ObjectProperties> view_objects(Session& s, const Moref& container, const std::string& type,
                                                  const std::vector<std::string>& paths, std::vector<xml::Document>& keep) {
  xml::Document doc;
  xml::Node view = s.call("CreateContainerView",
                          s.service().view_manager.xml("_this") + container.xml("container") +
                              fmt::format("<type>{}</type><recursive>true</recursive>", xml::escape(type)),
                          doc);
  if (!view) throw Error(fmt::format("vSphere {}: CreateContainerView returned no view", s.host()));
  Moref view_ref = Moref::from(view);
  std::vector<ObjectProperties> out;
  try {
    std::string spec = fmt::format(
        "<specSet><propSet><type>{}</type>{}</propSet><objectSet>{}<skip>true</skip>"
        "<selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path>"
        "<skip>false</skip></selectSet></objectSet></specSet>",
        xml::escape(type), path_set(paths), view_ref.xml("obj"));
    out = collect(s, spec, keep);
  } catch (...) {
    try { s.invoke("DestroyView", view_ref.xml("_this")); } catch (...) {}
    throw;
  }
  s.invoke("DestroyView", view_ref.xml("_this"));
  return out;
}

std::vector<VmInfo> list_vms(Session& s) {
  std::vector<xml::Document> keep;
  std::map<std::string, std::string> networks;
  std::vector<VmInfo> out;
  for (auto& o : view_objects(s, s.service().root_folder, "VirtualMachine", kVmPaths, keep)) {
    out.push_back(to_vm(o));
    resolve_networks(s, out.back(), networks);
  }
  return out;
}

std::vector<VmSnapshots> list_all_snapshots(Session& s, std::vector<std::string>& errors) {
  std::vector<xml::Document> keep;
  std::vector<VmSnapshots> out;
  for (auto& o : view_objects(s, s.service().root_folder, "VirtualMachine", {"name", "config.instanceUuid", "snapshot"},
                              keep)) {
    VmSnapshots vm{o.ref, o.get("name").text(), o.get("config.instanceUuid").text(), {}};
    if (vm.instance_uuid.empty()) continue;  // no config: orphaned or inaccessible, nothing of ours to find
    try {
      if (xml::Node snap = o.get("snapshot")) vm.snapshots = parse_snapshot_tree(snap);
    } catch (const std::exception& e) {
      errors.push_back(fmt::format("VM {} ({}): its snapshot tree cannot be read: {}", vm.name, vm.ref.value, e.what()));
      continue;
    }
    out.push_back(std::move(vm));
  }
  return out;
}

std::map<std::string, std::string> vm_datacenters(Session& s) {
  std::map<std::string, std::string> out;
  std::vector<xml::Document> keep;
  for (auto& dc : view_objects(s, s.service().root_folder, "Datacenter", {"name"}, keep)) {
    std::string name = dc.get("name").text();
    for (auto& vm : view_objects(s, dc.ref, "VirtualMachine", {"name"}, keep)) out[vm.ref.value] = name;
  }
  return out;
}

std::string datacenter_of(Session& s, const Moref& obj) {
  std::vector<xml::Document> keep;
  Moref at = obj;
  // The inventory is a tree a few levels deep; the bound only stops a server's loop.
  for (int depth = 0; depth < 64 && !at.empty(); ++depth) {
    if (at.type == "Datacenter") return retrieve(s, at, {"name"}, keep).get("name").text();
    bool vm = at.type == "VirtualMachine";
    ObjectProperties p = retrieve(s, at, vm ? std::vector<std::string>{"parent", "parentVApp"}
                                            : std::vector<std::string>{"parent"}, keep);
    xml::Node up = p.get("parent");
    if (!up && vm) up = p.get("parentVApp");
    at = up ? Moref::from(up) : Moref{};
  }
  return "";
}

VmInfo describe_vm(Session& s, const Moref& vm) {
  std::vector<xml::Document> keep;
  VmInfo info = to_vm(retrieve(s, vm, kVmPaths, keep));
  std::map<std::string, std::string> networks;
  resolve_networks(s, info, networks);
  return info;
}

std::optional<Moref> find_vm_by_bios_uuid(Session& s, const std::string& uuid) {
  xml::Document doc;
  return moref_or_none(s.call("FindByUuid",
                              s.service().search_index.xml("_this") +
                                  fmt::format("<uuid>{}</uuid><vmSearch>true</vmSearch><instanceUuid>false</instanceUuid>",
                                              xml::escape(uuid)),
                              doc));
}

std::optional<Moref> find_vm_by_instance_uuid(Session& s, const std::string& uuid) {
  xml::Document doc;
  return moref_or_none(s.call("FindByUuid",
                              s.service().search_index.xml("_this") +
                                  fmt::format("<uuid>{}</uuid><vmSearch>true</vmSearch><instanceUuid>true</instanceUuid>",
                                              xml::escape(uuid)),
                              doc));
}

std::optional<Moref> find_by_inventory_path(Session& s, const std::string& path) {
  xml::Document doc;
  return moref_or_none(s.call(
      "FindByInventoryPath",
      s.service().search_index.xml("_this") + fmt::format("<inventoryPath>{}</inventoryPath>", xml::escape(path)), doc));
}

}  // namespace mk::vsphere
