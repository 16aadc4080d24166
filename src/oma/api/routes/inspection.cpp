// Guest inspection: start a VM's inspection (a job), read its last result.
#include <fmt/format.h>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

const Tag kInspectionTag{"Inspections", "What is installed on a VM's replicas (OS, boot disk, firmware) and whether it can be "
                              "converted for KVM, read with virt-inspector; the replicas are never written"};

}  // namespace

std::vector<Route> inspection_routes(const Services& s) {
  std::vector<Route> routes;
  if (!s.inspections) return routes;
  InspectionService& service = *s.inspections;
  Repositories& repos = s.repos;
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/inspection",
      .operation_id = "startInspection",
      .tag = &kInspectionTag,
      .summary = "Inspect the VM's guest on its replicas, read-only (a job)",
      .description = "Starts an inspection job (kind inspection): virt-inspector opens the VM's replicas read-only "
                     "and finds the OS (family, distro, version), the root filesystem and the disk that holds it, "
                     "the firmware the disks show, and whether virt-v2v can convert the guest (and if not, why: no "
                     "OS, a Windows guest without virtio-win drivers, an OS virt-v2v does not convert). The job "
                     "holds the VM while virt-inspector runs (no pass meanwhile: the replicas must not change "
                     "under it). The result, with vSphere's firmware setting of the source, is stored with the VM "
                     "(GET /api/v1/vms/{vm_id}/inspection); the job completes whether the guest is convertible or "
                     "not, and fails only when the inspection could not run. With guest conversion on, the OMA "
                     "also inspects each VM after its full passes (setting inspection.after_pass).",
      .role = "operator",
      .params = {vm_id_path_param()},
      .responses = {{202, "the inspection job, started", &kJobStarted},
                    {404, "no such VM"},
                    {409, "the VM cannot be inspected now: a disk without a replica or committed change ID, a pass "
                          "that did not complete, an active job (another inspection too), or cut over already"}},
      .handler = [&service, &repos](auto& req, auto&, auto&) -> Reply {
         std::string id = service.start(req.param("vm_id"));
         return {202, {{"job_id", id}, {"status", repos.jobs.get_job(id).status}}, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}/inspection",
      .operation_id = "getInspection",
      .tag = &kInspectionTag,
      .summary = "The VM's last guest inspection",
      .description = "The VM's last guest inspection, whoever ran it (an operator, the OMA after a pass, a boot "
                     "check, a cutover or test failover): OS, root device, boot disk, firmware as the disks show it "
                     "and as vSphere reports it, and whether the guest can be converted for KVM, and if not, why. "
                     "A running inspection's progress is its job (GET /api/v1/jobs/{job_id}).",
      .role = "viewer",
      .params = {vm_id_path_param()},
      .responses = {{200, "the last inspection", &kInspection},
                    {404, "no such VM, or it has not been inspected yet"}},
      .handler = [&repos](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("vm_id");
         VmRecord vm = repos.vms.get_vm(id);
         auto r = repos.inspections.find(id);
         if (!r) {
           throw NotFound(fmt::format("VM {} ({}) has not been inspected yet: start an inspection (POST "
                                      "/api/v1/vms/{}/inspection) once it has a completed full pass",
                                      id, vm.name, id));
         }
         return {200, inspection_json(*r), ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
