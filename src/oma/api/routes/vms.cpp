// The VMs the OMA manages: list (with pass statistics and schedules), add, show, disks,
// preflight.
#include <fmt/format.h>

#include <map>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"
#include "oma/names.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Tag kVmsTag{"VMs", "The VMs the OMA migrates: added from discovery, with their disks, passes and readiness"};

const Schema kDiskSchema{{
    {.name = "key", .description = "VMware device key", .max_length = 10, .check = disk_key_check, .example = "2000",
     .pattern = kDiskKeyPattern},
    {.name = "unit", .type = Type::Integer, .description = "unit number (the N of diskN)", .min = 0, .max = 255},
    {.name = "label", .required = false, .description = "vCenter's label (default \"Hard disk\")",
     .check = name_check, .example = "Hard disk 1"},
    {.name = "capacity_bytes", .type = Type::Integer, .description = "capacity in bytes (a multiple of 512)",
     .min = 512, .max = int64_t{64} << 40, .example = int64_t{17179869184}},
}, "NewVmDisk", "a disk of a VM to add"};

const Schema kNicSchema{{
    {.name = "key", .required = false, .description = "VMware device key (default 4000, 4001, ...)", .max_length = 10,
     .check = disk_key_check, .example = "4000", .pattern = kDiskKeyPattern},
    {.name = "mac", .description = "MAC address", .max_length = 17, .check = mac_check, .example = "00:50:56:aa:bb:cc",
     .pattern = kMacPattern},
    {.name = "network", .description = "VMware network (port group) name", .check = name_check,
     .example = "VM Network"},
}, "NewVmNic", "a network card of a VM to add"};

const Schema kAddVmSchema{{
    uuid_field("vm_id", "VMware instance UUID"),
    {.name = "name", .description = "the VM's name in vCenter", .check = name_check, .example = "web01"},
    {.name = "vcenter", .description = "the vCenter that holds it", .check = name_check,
     .example = "vcenter.example.local"},
    {.name = "datacenter", .description = "its datacenter", .check = name_check, .example = "DC1"},
    {.name = "cpus", .type = Type::Integer, .description = "virtual CPUs", .min = 1, .max = 1024, .example = 2},
    {.name = "memory_mb", .type = Type::Integer, .description = "memory in MiB", .min = 1, .max = int64_t{64} << 20,
     .example = 4096},
    {.name = "guest_os", .required = false, .description = "guest OS as vCenter names it (default \"other\")",
     .check = name_check, .example = "debian12_64Guest"},
    {.name = "power_state", .required = false, .description = "power state (default poweredOn)",
     .one_of = kPowerStates},
    {.name = "disks", .type = Type::Array, .description = "its disks (at least one)", .max_length = 64,
     .items = &kDiskSchema},
    {.name = "nics", .type = Type::Array, .required = false, .description = "its network cards", .max_length = 32,
     .items = &kNicSchema},
    optional(uuid_field("vma_id", "the VMA that discovered the VM (default: the default VMA)")),
}, "NewVm", "a VM to add, as discovery shows it"};

const Schema kVmList{{array_field("vms", "every VM the OMA manages", &kVmSummary)}};
const Schema kDiskList{{array_field("disks", "the VM's disks, by unit", &kDisk)}};
const Schema kVmPreflight{{
    uuid_field("vm_id", "the VM"),
    bool_field("blocked", "a pass or the cutover would be refused: see findings", false),
    array_field("findings", "every finding at once, vCenter's and CloudStack's; each says what it refuses (empty: "
                "nothing known does)", &protocol::schemas::preflight_finding()),
    array_field("notes", "what CloudStack refuses nothing for but an operator should know (kvm.snapshot.enabled "
                "off, no expunge permission, a fixed service offering)", &protocol::schemas::preflight_finding()),
}, "VmPreflight", "what would refuse a replication pass or the cutover of a VM, read afresh from vCenter and "
                  "CloudStack"};

// A target that cannot be asked is a finding too: its checks are unknown.
protocol::PreflightFinding target_unavailable(const std::string& vm_id, const std::string& why) {
  return {"target-unavailable", std::nullopt, "CloudStack could not be asked: " + why,
          "check the CloudStack settings (POST /api/v1/settings/cloudstack/validate), then run the preflight again",
          fmt::format("VM {}: CloudStack could not be asked: {}", vm_id, why)};
}

}  // namespace

std::vector<Route> vm_routes(const Services& s) {
  Repositories& repos = s.repos;
  std::vector<Route> routes;
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms",
      .operation_id = "listVms",
      .tag = &kVmsTag,
      .summary = "List VMs with their disks, last pass, change-ID age, cutover readiness, predicted downtime and schedule",
      .description = "Every VM the OMA manages with its disks, its newest ended pass, the age of its oldest "
                     "committed change ID, whether it is ready for cutover (and if not, why), the downtime a "
                     "cutover is predicted to take, its schedule, and its guest as last inspected (OS, whether it "
                     "can be converted for KVM and if not why).",
      .role = "viewer",
      .responses = {{200, "the VMs", &kVmList}},
      .handler = [&repos, converts = s.boot_checks && s.boot_checks->conversion_at_cutover()](auto&, auto&,
                                                                                             auto&) -> Reply {
         // Eight queries for the whole list, none per VM.
         std::map<std::string, std::vector<DiskRecord>> disks_of = repos.vms.disks_by_vm();
         std::map<std::string, std::vector<JobRecord>> passes;
         for (auto& j : repos.jobs.ended_passes()) passes[j.vm_id].push_back(std::move(j));
         std::map<std::string, std::vector<ChangeIdCommit>> commits;
         for (auto& c : repos.jobs.latest_change_id_commits()) commits[c.vm_id].push_back(std::move(c));
         std::map<std::string, double> snapshot_seconds = repos.jobs.incremental_snapshot_seconds();
         std::map<std::string, ScheduleRecord> schedules;
         for (auto& sc : repos.schedules.list_schedules()) schedules[sc.vm_id] = std::move(sc);
         std::map<std::string, BootCheckRecord> boot_checks = repos.boot_checks.all();
         std::map<std::string, InspectionRecord> inspections = repos.inspections.all();
         int64_t now = now_ms();
         json out = json::array();
         for (const auto& v : repos.vms.list_vms()) {
           json j = vm_json(v);
           const auto& disks = disks_of[v.vm_id];
           j["disks"] = json::array();
           for (const auto& d : disks) j["disks"].push_back(disk_json(d));
           add_pass_stats(j, pass_stats(v, disks, passes[v.vm_id], commits[v.vm_id], now, snapshot_seconds));
           auto sc = schedules.find(v.vm_id);
           j["schedule"] = sc == schedules.end() ? json(nullptr) : schedule_json(sc->second);
           auto bc = boot_checks.find(v.vm_id);
           j["boot_check"] = bc == boot_checks.end() ? json(nullptr)
                                                     : boot_check_json(bc->second, BootCheckView::Summary);
           auto in = inspections.find(v.vm_id);
           j["guest"] = in == inspections.end() ? json(nullptr) : guest_summary_json(in->second);
           // A cutover that converts the guest takes about as long as the last boot
           // check's conversion on top of the final pass.
           j["predicted_conversion_seconds"] = nullptr;
           if (converts && bc != boot_checks.end() && bc->second.conversion_seconds > 0) {
             j["predicted_conversion_seconds"] = bc->second.conversion_seconds;
             if (j["predicted_downtime_seconds"].is_number())
               j["predicted_downtime_seconds"] = j["predicted_downtime_seconds"].get<double>() +
                                                 bc->second.conversion_seconds;
           }
           out.push_back(std::move(j));
         }
         return {200, {{"vms", out}}, ""};
       }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms",
      .operation_id = "addVm",
      .tag = &kVmsTag,
      .summary = "Add a VM from discovery, with its disks",
      .description = "Adds a VM (as GET /api/v1/discover shows it) with its disks and NICs, so that it can be "
                     "replicated. vma_id names the paired VMA that discovered it; its jobs then go through that VMA.",
      .role = "operator",
      .body = &kAddVmSchema,
      .responses = {{201, "the VM, added", &kVm}, {409, "the VM is known already, or two disks share a unit"}},
      .handler = [&repos](auto&, const json& b, auto&) -> Reply {
         VmRecord v;
         v.vm_id = b["vm_id"];
         v.name = b["name"];
         v.vcenter = b["vcenter"];
         v.datacenter = b["datacenter"];
         v.cpus = b["cpus"];
         v.memory_mb = b["memory_mb"];
         v.guest_os = b.value("guest_os", "other");
         v.power_state = parse_enum<protocol::PowerState>(b.value("power_state", "poweredOn"), "power_state");
         std::vector<DiskRecord> disks;
         for (const auto& d : b["disks"]) {
           DiskRecord r;
           r.vm_id = v.vm_id;
           r.disk_key = d["key"];
           r.unit = d["unit"];
           r.label = d.value("label", "Hard disk");
           r.capacity_bytes = d["capacity_bytes"];
           if (r.capacity_bytes % 512) throw FieldError("disks.capacity_bytes", "must be a multiple of 512");
           disks.push_back(r);
         }
         if (disks.empty()) throw FieldError("disks", "a VM needs at least one disk");
         std::optional<std::string> vma_id;
         if (b.contains("vma_id")) {
           vma_id = b["vma_id"].get<std::string>();
           if (!repos.vmas.find_vma(*vma_id)) throw FieldError("vma_id", "is not a VMA paired with this OMA");
         }
         std::vector<NicRecord> nics;
         for (const auto& n : b.value("nics", json::array())) {
           std::string key = n.value("key", std::to_string(4000 + nics.size()));
           for (const auto& other : nics)
             if (other.nic_key == key) throw FieldError("nics.key", "two NICs share the key " + key);
           nics.push_back({v.vm_id, key, n["mac"], n["network"]});
         }
         repos.vms.add_vm(v, disks);
         if (vma_id) repos.vms.set_vm_vma(v.vm_id, vma_id);
         if (!nics.empty()) repos.vms.set_vm_nics(v.vm_id, nics);
         json out = vm_json(repos.vms.get_vm(v.vm_id));
         out["disks"] = json::array();
         for (const auto& d : repos.vms.list_disks(v.vm_id)) out["disks"].push_back(disk_json(d));
         return {201, out, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}",
      .operation_id = "getVm",
      .tag = &kVmsTag,
      .summary = "Show a VM with its disks",
      .description = "A VM with its disks (volume, export, committed change ID), its NICs, what a cutover or a "
                     "test failover built for it in CloudStack, its guest as last inspected (in short: GET "
                     "/api/v1/vms/{vm_id}/inspection), and its last boot check (without the picture: "
                     "GET /api/v1/vms/{vm_id}/boot-check).",
      .role = "viewer",
      .params = {vm_id_path_param()},
      .responses = {{200, "the VM", &kVmDetail}, {404, "no such VM"}},
      .handler = [&repos](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("vm_id");
         json out = vm_json(repos.vms.get_vm(id));
         out["disks"] = json::array();
         for (const auto& d : repos.vms.list_disks(id)) out["disks"].push_back(disk_json(d));
         out["nics"] = json::array();
         for (const auto& n : repos.vms.list_nics(id))
           out["nics"].push_back({{"key", n.nic_key}, {"mac", n.mac}, {"network", n.network}});
         // What a cutover or a test failover built in CloudStack (the target VM's id).
         out["failovers"] = json::array();
         for (FailoverKind kind : {FailoverKind::Cutover, FailoverKind::TestFailover}) {
           if (auto f = repos.vms.find_failover(id, kind)) {
             out["failovers"].push_back({{"kind", f->kind}, {"job_id", f->job_id},
                                         {"target_vm_id", f->target_vm_id}, {"created_at", f->created_at}});
           }
         }
         auto bc = repos.boot_checks.find(id);
         out["boot_check"] = bc ? boot_check_json(*bc, BootCheckView::Full) : json(nullptr);
         auto in = repos.inspections.find(id);
         out["guest"] = in ? guest_summary_json(*in) : json(nullptr);
         return {200, out, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}/preflight",
      .operation_id = "getVmPreflight",
      .tag = &kVmsTag,
      .summary = "What would refuse a replication pass or the cutover of the VM, all at once",
      .description = "Asks the VM's VMA to read the VM afresh from vCenter and check what a pass would refuse: "
                     "independent, RDM, shared or encrypted disks, disks without a file, snapshots of its own or "
                     "a needed consolidation, CBT that cannot be enabled, templates and orphaned or inaccessible "
                     "VMs. With CloudStack volumes, CloudStack is asked too: disks over "
                     "custom.diskoffering.size.max, more disks than the OMA's VM may hold, VM snapshots or a "
                     "backup offering on the OMA's VM (these refuse a pass), and the service offering's CPU and "
                     "memory ranges (these refuse the cutover). Each finding names the disk and what to do. A job "
                     "of a blocked VM fails before it creates anything; a cutover is refused before the source is "
                     "touched.",
      .role = "operator",
      .params = {vm_id_path_param()},
      .responses = {{200, "the findings", &kVmPreflight},
                    {404, "no such VM"},
                    {502, "the VMA did not answer or could not read the VM"}},
      .handler = [&repos, &jobs = s.jobs](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("vm_id");
         repos.vms.get_vm(id);
         auto vma = jobs.vma_for(id);
         std::vector<protocol::PreflightFinding> findings;
         try {
           findings = vma->preflight(id);
         } catch (const std::exception& e) {
           return {502, {{"error", fmt::format("preflight of VM {} through {} failed: {}; check the VMA and its "
                                               "tunnel (Infrastructure page)",
                                               id, vma->describe(), e.what())}}, ""};
         }
         std::vector<protocol::PreflightFinding> notes;
         if (TargetChecks* target = jobs.target_checks()) {
           try {
             TargetReport r = target->check(id);
             findings.insert(findings.end(), r.blocking.begin(), r.blocking.end());
             findings.insert(findings.end(), r.cutover.begin(), r.cutover.end());
             notes = std::move(r.notes);
           } catch (const std::exception& e) {
             findings.push_back(target_unavailable(id, e.what()));
           }
         }
         json out = json::array(), noted = json::array();
         for (const auto& f : findings) out.push_back(protocol::encode(f));
         for (const auto& f : notes) noted.push_back(protocol::encode(f));
         return {200, {{"vm_id", id}, {"blocked", !findings.empty()}, {"findings", out}, {"notes", noted}}, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}/disks",
      .operation_id = "listVmDisks",
      .tag = &kVmsTag,
      .summary = "List a VM's disks with volume, export and committed change ID",
      .description = "A VM's disks by unit: VMware key, capacity, the target volume and NBD export, and the "
                     "committed change ID its next incremental pass starts from.",
      .role = "viewer",
      .params = {vm_id_path_param()},
      .responses = {{200, "the disks", &kDiskList}, {404, "no such VM"}},
      .handler = [&repos](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("vm_id");
         repos.vms.get_vm(id);
         json out = json::array();
         for (const auto& d : repos.vms.list_disks(id)) out.push_back(disk_json(d));
         return {200, {{"disks", out}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
