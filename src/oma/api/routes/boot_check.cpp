// The boot proof before cutover: start a VM's boot check (a job), read its last result.
#include <fmt/format.h>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;

const Tag kBootCheckTag{"Boot checks", "Proof before cutover that a VM's guest boots on KVM: overlays of its replicas "
                              "converted and booted in a throwaway VM; the replicas are never written"};

}  // namespace

std::vector<Route> boot_check_routes(const Services& s) {
  std::vector<Route> routes;
  if (!s.boot_checks) return routes;
  BootCheckService& service = *s.boot_checks;
  Repositories& repos = s.repos;
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vms/{vm_id}/boot-check",
      .operation_id = "startBootCheck",
      .tag = &kBootCheckTag,
      .summary = "Check that the VM's guest boots on KVM, on overlays of its replicas (a job)",
      .description = "Starts a boot check job (kind boot_check): the replicas are inspected read-only, qcow2 "
                     "overlays over them are converted with virt-v2v-in-place and booted in a throwaway qemu "
                     "(virtio disks, no network) for at most the OMA's limit. \"Booted\" is read back from the "
                     "overlays (the guest's journal), with the serial console's tail and a picture of the VGA "
                     "console as evidence. The job holds the VM (no pass or cutover meanwhile); the replicas are "
                     "never written. The result is stored with the VM (GET /api/v1/vms/{vm_id}/boot-check); the "
                     "job completes when the guest booted and fails with the reason when it did not.",
      .role = "operator",
      .params = {vm_id_path_param()},
      .responses = {{202, "the boot check job, started", &kJobStarted},
                    {404, "no such VM"},
                    {409, "the VM cannot be checked now: a disk without a replica or committed change ID, a pass "
                          "that did not complete, an active job (another boot check too), or cut over already"}},
      .handler = [&service, &repos](auto& req, auto&, auto&) -> Reply {
         std::string id = service.start(req.param("vm_id"));
         return {202, {{"job_id", id}, {"status", repos.jobs.get_job(id).status}}, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vms/{vm_id}/boot-check",
      .operation_id = "getBootCheck",
      .tag = &kBootCheckTag,
      .summary = "The VM's last boot check, with the picture of its console",
      .description = "The VM's last boot check: whether the guest booted and the evidence, inspection, conversion "
                     "and boot times, the serial console's tail and the VGA console's picture (base64; PNG from "
                     "Debian's qemu). A running check's progress is its job (GET /api/v1/jobs/{job_id}).",
      .role = "viewer",
      .params = {vm_id_path_param()},
      .responses = {{200, "the last boot check", &kBootCheckDetail},
                    {404, "no such VM, or it has had no boot check yet"}},
      .handler = [&repos](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("vm_id");
         VmRecord vm = repos.vms.get_vm(id);
         auto r = repos.boot_checks.find(id, true);
         if (!r) {
           throw NotFound(fmt::format("VM {} ({}) has had no boot check yet: start one (POST "
                                      "/api/v1/vms/{}/boot-check)",
                                      id, vm.name, id));
         }
         return {200, boot_check_json(*r, BootCheckView::WithScreenshot), ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
