// The VMs the OMA manages: list (with pass statistics and schedules), add, show, disks.
#include <map>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/names.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Schema kDiskSchema{{
    {.name = "key", .description = "VMware device key", .max_length = 9, .check = disk_key_check},
    {.name = "unit", .type = Type::Integer, .description = "unit number (the N of diskN)", .min = 0, .max = 255},
    {.name = "label", .required = false, .check = name_check},
    {.name = "capacity_bytes", .type = Type::Integer, .min = 512, .max = int64_t{64} << 40},
}};

const Schema kNicSchema{{
    {.name = "key", .required = false, .description = "VMware device key", .max_length = 9, .check = disk_key_check},
    {.name = "mac", .max_length = 17, .check = mac_check},
    {.name = "network", .description = "VMware network (port group) name", .check = name_check},
}};

const Schema kAddVmSchema{{
    {.name = "vm_id", .description = "VMware instance UUID", .max_length = 36, .check = uuid_check},
    {.name = "name", .check = name_check},
    {.name = "vcenter", .check = name_check},
    {.name = "datacenter", .check = name_check},
    {.name = "cpus", .type = Type::Integer, .min = 1, .max = 1024},
    {.name = "memory_mb", .type = Type::Integer, .min = 1, .max = int64_t{64} << 20},
    {.name = "guest_os", .required = false, .check = name_check},
    {.name = "power_state", .required = false, .one_of = {"poweredOn", "poweredOff", "suspended"}},
    {.name = "disks", .type = Type::Array, .max_length = 64, .items = &kDiskSchema},
    {.name = "nics", .type = Type::Array, .required = false, .max_length = 32, .items = &kNicSchema},
    {.name = "vma_id", .required = false, .description = "the VMA that discovered the VM (default: the default VMA)",
     .max_length = 36, .check = uuid_check},
}};

}  // namespace

std::vector<Route> vm_routes(const Services& s) {
  Repositories& repos = s.repos;
  std::vector<Route> routes;
  routes.push_back({"GET", "/api/v1/vms",
       "List VMs with their disks, last pass, change-ID age, cutover readiness, predicted downtime and schedule",
       "operator", nullptr, [&repos](auto&, auto&, auto&) -> Reply {
         // Three queries for the whole list, not three per VM.
         std::map<std::string, std::vector<JobRecord>> passes;
         for (auto& j : repos.jobs.ended_passes()) passes[j.vm_id].push_back(std::move(j));
         std::map<std::string, std::vector<ChangeIdCommit>> commits;
         for (auto& c : repos.jobs.latest_change_id_commits()) commits[c.vm_id].push_back(std::move(c));
         std::map<std::string, ScheduleRecord> schedules;
         for (auto& sc : repos.schedules.list_schedules()) schedules[sc.vm_id] = std::move(sc);
         int64_t now = now_ms();
         json out = json::array();
         for (const auto& v : repos.vms.list_vms()) {
           json j = vm_json(v);
           auto disks = repos.vms.list_disks(v.vm_id);
           j["disks"] = json::array();
           for (const auto& d : disks) j["disks"].push_back(disk_json(d));
           add_pass_stats(j, pass_stats(v, disks, passes[v.vm_id], commits[v.vm_id], now));
           auto sc = schedules.find(v.vm_id);
           j["schedule"] = sc == schedules.end() ? json(nullptr) : schedule_json(sc->second);
           out.push_back(std::move(j));
         }
         return {200, {{"vms", out}}, ""};
       }});
  routes.push_back({"POST", "/api/v1/vms", "Add a VM from discovery, with its disks", "operator", &kAddVmSchema,
       [&repos](auto&, const json& b, auto&) -> Reply {
         VmRecord v;
         v.vm_id = b["vm_id"];
         v.name = b["name"];
         v.vcenter = b["vcenter"];
         v.datacenter = b["datacenter"];
         v.cpus = b["cpus"];
         v.memory_mb = b["memory_mb"];
         v.guest_os = b.value("guest_os", "other");
         v.power_state = b.value("power_state", "poweredOn");
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
  routes.push_back({"GET", "/api/v1/vms/{vm_id}", "Show a VM with its disks", "operator", nullptr,
       [&repos](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "vm_id");
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
         return {200, out, ""};
       }});
  routes.push_back({"GET", "/api/v1/vms/{vm_id}/disks", "List a VM's disks with volume, export and committed change ID",
       "operator", nullptr, [&repos](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "vm_id");
         repos.vms.get_vm(id);
         json out = json::array();
         for (const auto& d : repos.vms.list_disks(id)) out.push_back(disk_json(d));
         return {200, {{"disks", out}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
