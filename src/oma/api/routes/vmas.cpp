// Paired VMAs: pairing bundles, enrolment, list, approve, revoke, and health and
// discovery through a VMA's tunnel.
#include <fmt/format.h>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/views.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Schema kBundleSchema{{
    {.name = "expires_in_seconds", .type = Type::Integer, .required = false,
     .description = "how long the pairing code stays valid (default 24 hours)", .min = 1, .max = 30 * 86400},
}};

const Schema kEnrollSchema{{
    {.name = "name", .description = "the VMA's name (site)", .check = name_check},
    {.name = "vcenter", .description = "the vCenter it serves", .check = name_check},
    {.name = "ssh_public_key", .description = "the VMA's ssh-ed25519 public key", .max_length = 512,
     .check = ssh_key_check},
}};

}  // namespace

std::vector<Route> vma_routes(const Services& s) {
  std::vector<Route> routes;
  if (!s.pairing) return routes;
  VmaRepository& vmas = s.repos.vmas;
  VmRepository& vms = s.repos.vms;
  PairingService& pairing = *s.pairing;
  routes.push_back({"POST", "/api/v1/vmas/pairing-bundles",
       "Issue a one-time VMA pairing bundle (host key, NBD PSK, VMA API token, pairing code); shown once",
       "admin", &kBundleSchema, [&pairing](auto&, const json& b, auto&) -> Reply {
         std::optional<std::chrono::seconds> ttl;
         if (b.contains("expires_in_seconds")) ttl = std::chrono::seconds(b["expires_in_seconds"].get<int64_t>());
         return {201, pairing.issue_bundle(ttl), ""};
       },
       /*body_optional=*/true});
  routes.push_back({"POST", "/api/v1/vmas/enroll",
       "A VMA enrols with its pairing code (Authorization: Pairing CODE; single use) and its SSH key",
       "pairing", &kEnrollSchema, [&pairing](auto& req, const json& b, auto&) -> Reply {
         std::string code = req.header("Authorization").substr(8);
         try {
           VmaRecord v = pairing.enroll(code, b["name"], b["vcenter"], b["ssh_public_key"]);
           json out = vma_json(v);
           out["next"] = fmt::format("an operator approves it: POST /api/v1/vmas/{}/approve", v.vma_id);
           return {202, out, ""};
         } catch (const Conflict& e) {
           return error_reply(403, e.what());
         }
       }});
  routes.push_back({"GET", "/api/v1/vmas", "List paired VMAs with their tunnel state as the OMA sees it", "operator", nullptr,
       [&vmas, &pairing](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& v : vmas.list_vmas()) {
           json j = vma_json(v);
           j["tunnel_state"] = pairing.tunnel_state(v);
           out.push_back(j);
         }
         return {200, {{"vmas", out}}, ""};
       }});
  routes.push_back({"POST", "/api/v1/vmas/{vma_id}/approve", "Approve a pending VMA: its key may hold its tunnel", "admin", nullptr,
       [&pairing](auto& req, auto&, auto&) -> Reply {
         return {200, vma_json(pairing.approve(uuid_param(req, "vma_id"))), ""};
       }});
  routes.push_back({"POST", "/api/v1/vmas/{vma_id}/revoke", "Revoke a VMA: key removed, live SSH session ended", "admin", nullptr,
       [&vmas, &pairing](auto& req, auto&, auto&) -> Reply {
         std::string id = uuid_param(req, "vma_id");
         auto pid = pairing.revoke(id);
         json out = vma_json(vmas.get_vma(id));
         out["session_ended"] = pid.has_value();
         out["session_pid"] = pid ? json(*pid) : json(nullptr);
         out["warning"] = nullptr;
         if (pairing.tunnel_state(vmas.get_vma(id)) == "up")
           out["warning"] = fmt::format("something still listens on the VMA's tunnel port 127.0.0.1:{} and it is not "
                                        "an sshd session this OMA may end (is the OMA running as root?): end it by "
                                        "hand; the VMA's key is already removed",
                                        out["tunnel_port"].get<int64_t>());
         return {200, out, ""};
       }});
  routes.push_back({"GET", "/api/v1/vmas/{vma_id}/health", "A VMA's health through its tunnel, and the tunnel's state",
       "operator", nullptr, [&pairing](auto& req, auto&, auto&) -> Reply {
         return {200, pairing.health(uuid_param(req, "vma_id")), ""};
       }});
  routes.push_back({"GET", "/api/v1/vmas/{vma_id}/discover",
       "The VMs of this VMA's vCenter with disks and NICs (through its tunnel), each marked managed if added",
       "operator", nullptr, [&vmas, &vms, &pairing](auto& req, auto&, auto&) -> Reply {
         VmaRecord v = vmas.get_vma(uuid_param(req, "vma_id"));
         if (v.state != VmaState::Approved)
           return error_reply(409, fmt::format("VMA {} ({}) is {}: approve it first", v.vma_id, v.name, v.state));
         Discovery d;
         try {
           d = pairing.client(v)->discover();
         } catch (const std::exception& e) {
           return error_reply(502, fmt::format("discovery through VMA {} ({}) failed: {}; check its tunnel with "
                                               "GET /api/v1/vmas/{}/health",
                                               v.vma_id, v.name, e.what(), v.vma_id));
         }
         json found = json::array();
         for (const auto& vm : d.vms) found.push_back(discovered_vm_json(vm, vms.find_vm(vm.vm_id).has_value()));
         return {200, {{"vma_id", v.vma_id}, {"vcenter", d.vcenter}, {"vms", found}}, ""};
       }});
  return routes;
}

}  // namespace mk::oma::api
