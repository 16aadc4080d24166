// Paired VMAs: pairing bundles, enrolment, list, approve, revoke, and health and
// discovery through a VMA's tunnel.
#include <fmt/format.h>

#include "oma/api/checks.h"
#include "oma/api/routes/routes.h"
#include "oma/api/schemas.h"
#include "oma/api/views.h"
#include "oma/errors.h"

namespace mk::oma::api {
namespace {

using nlohmann::json;
using Type = Field::Type;

const Tag kVmasTag{"VMAs", "Paired VMware Migration Appliances: pairing, approval, revocation, health, discovery"};

const Schema kBundleSchema{{
    {.name = "expires_in_seconds", .type = Type::Integer, .required = false,
     .description = "how long the pairing code stays valid (default 24 hours)", .min = 1, .max = 30 * 86400,
     .example = 3600},
}, "NewPairingBundle", "options of a pairing bundle"};

const Schema kVma{vma_fields(), "Vma", "a VMware Migration Appliance paired with this OMA"};
const Schema kVmaListed{
    join_fields(vma_fields(), {enum_field("tunnel_state", "whether its tunnel port answers on the OMA",
                                          kTunnelPortStates)}),
    "VmaWithTunnel", "a VMA with its tunnel state as the OMA sees it"};
const Schema kVmaList{{array_field("vmas", "every VMA, revoked ones too", &kVmaListed)}};
const Schema kVmaRevoked{
    join_fields(vma_fields(),
                {bool_field("session_ended", "its live SSH session was ended"),
                 nullable(int_field("session_pid", "the sshd process that was ended", 31337, 1)),
                 enum_field("session_outcome",
                            "what became of its SSH session: ended, no-session (none was live), refused (something "
                            "else holds its tunnel port) or failed (see session_detail)",
                            kSessionOutcomes),
                 text_field("session_detail",
                            "how the session was ended (by the OMA, or by the tunnel-session helper when the OMA "
                            "runs unprivileged) or why it was not",
                            "the sshd session (pid 31337) holding 127.0.0.1:9081 was ended"),
                 nullable(text_field("warning", "something still holds its tunnel port",
                                     "something still listens on the VMA's tunnel port ..."))}),
    "VmaRevoked", "a revoked VMA"};

const Schema kTunnelPort{{
    int_field("port", "the OMA's loopback port of the tunnel", 9081, 1),
    enum_field("state", "whether it answers", kTunnelPortStates),
}, "TunnelPort", "a VMA's tunnel port on the OMA"};
const Schema kVmaHealthReport{{
    uuid_field("vma_id", "the VMA"),
    text_field("name", "its name", "site-a"),
    enum_field("state", "its pairing state", kVmaStates),
    object_field("tunnel", "its tunnel port on the OMA", &kTunnelPort),
    nullable(object_field("vma", "the VMA's own health, through the tunnel (null: not reached)",
                          &protocol::schemas::health())),
    nullable(text_field("error", "why the VMA was not reached", "nothing answers on the VMA's tunnel port ...")),
}, "VmaHealthReport", "a paired VMA's health through its tunnel"};

const Schema kVmaDiscovery{{
    uuid_field("vma_id", "the VMA"),
    text_field("vcenter", "its vCenter", "vcenter.example.local"),
    array_field("vms", "the VMs it found", &kDiscoveredVm),
}, "VmaDiscovery", "the VMs of a VMA's vCenter"};

Field vma_param() { return uuid_path_param("vma_id", "the VMA"); }

}  // namespace

std::vector<Route> vma_routes(const Services& s) {
  std::vector<Route> routes;
  if (!s.pairing) return routes;
  VmaRepository& vmas = s.repos.vmas;
  VmRepository& vms = s.repos.vms;
  PairingService& pairing = *s.pairing;
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vmas/pairing-bundles",
      .operation_id = "createPairingBundle",
      .tag = &kVmasTag,
      .summary = "Issue a one-time VMA pairing bundle (host key, NBD PSK, VMA API token, pairing code); shown once",
      .description = "Everything a new VMA needs to pair (give it to `vma pair`): where to open its tunnel and "
                     "send data, the OMA's host key, the NBD TLS key, the token the OMA will present, and a "
                     "one-time pairing code. The secrets are shown only here.",
      .role = "admin",
      .body = &kBundleSchema,
      .body_optional = true,
      .responses = {{201, "the bundle", &protocol::schemas::pairing_bundle()}},
      .handler = [&pairing](auto&, const json& b, auto&) -> Reply {
         std::optional<std::chrono::seconds> ttl;
         if (b.contains("expires_in_seconds")) ttl = std::chrono::seconds(b["expires_in_seconds"].get<int64_t>());
         return {201, pairing.issue_bundle(ttl), ""};
       }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vmas/enroll",
      .operation_id = "enrollVma",
      .tag = &kVmasTag,
      .summary = "A VMA enrols with its pairing code (Authorization: Pairing CODE; single use) and its SSH key",
      .description = "Called by `vma pair`: the VMA presents its pairing code and SSH key (and, when the OMA "
                     "serves NBD with X.509, a certificate request for its NBD key, answered with its client "
                     "certificate), and waits for an operator's approval before its key may hold a tunnel and its "
                     "certificate may reach the NBD server.",
      .role = "pairing",
      .body = &protocol::schemas::enrol_request(),
      .responses = {{202, "enrolled; waiting for approval", &protocol::schemas::enrol_reply()},
                    {400, "a field is wrong (X.509: nbd_client_csr missing or not a usable request); the code is "
                          "not used"},
                    {403, "the pairing code is unknown, used or expired"},
                    {409, "the VMA speaks another protocol version (the message names both)"}},
      .handler = [&pairing](auto& req, const json& b, auto&) -> Reply {
         std::string code = req.header("Authorization").substr(8);
         auto r = protocol::decode<protocol::EnrolRequest>(b);
         try {
           protocol::check_peer_version(protocol::Side::Oma, r.protocol_version);  // before the code is spent
         } catch (const protocol::VersionMismatch& e) {
           return error_reply(409, e.what());
         }
         try {
           auto [v, cert] = pairing.enroll(code, r.name, r.vcenter, r.ssh_public_key, r.nbd_client_csr);
           std::string next = fmt::format("an operator approves it: POST /api/v1/vmas/{}/approve", v.vma_id);
           protocol::EnrolReply reply{protocol::kVersion, v.vma_id,  v.name, v.vcenter, enum_name(v.state),
                                      static_cast<int>(v.tunnel_port), next, cert};
           return {202, protocol::encode(reply), ""};
         } catch (const Conflict& e) {
           return error_reply(403, e.what());
         }
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vmas",
      .operation_id = "listVmas",
      .tag = &kVmasTag,
      .summary = "List paired VMAs with their tunnel state as the OMA sees it",
      .description = "Every VMA that enrolled, with its state and whether its tunnel port answers on the OMA.",
      .role = "viewer",
      .responses = {{200, "the VMAs", &kVmaList}},
      .handler = [&vmas, &pairing](auto&, auto&, auto&) -> Reply {
         json out = json::array();
         for (const auto& v : vmas.list_vmas()) {
           json j = vma_json(v);
           j["tunnel_state"] = pairing.tunnel_state(v);
           out.push_back(j);
         }
         return {200, {{"vmas", out}}, ""};
       }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vmas/{vma_id}/approve",
      .operation_id = "approveVma",
      .tag = &kVmasTag,
      .summary = "Approve a pending VMA: its key may hold its tunnel",
      .description = "Lets a pending VMA's SSH key open its tunnel (and only its own forwarding).",
      .role = "admin",
      .params = {vma_param()},
      .responses = {{200, "the VMA, approved", &kVma}, {404, "no such VMA"}, {409, "the VMA is not pending"}},
      .handler = [&pairing](auto& req, auto&, auto&) -> Reply {
         return {200, vma_json(pairing.approve(req.param("vma_id"))), ""};
       }});
  routes.push_back({
      .method = "POST",
      .path = "/api/v1/vmas/{vma_id}/revoke",
      .operation_id = "revokeVma",
      .tag = &kVmasTag,
      .summary = "Revoke a VMA: key removed, live SSH session ended",
      .description = "Removes the VMA's key and ends its live SSH session at once; warns when something still "
                     "holds its tunnel port.",
      .role = "admin",
      .params = {vma_param()},
      .responses = {{200, "the VMA, revoked", &kVmaRevoked}, {404, "no such VMA"}, {409, "the VMA is revoked already"}},
      .handler = [&vmas, &pairing](auto& req, auto&, auto&) -> Reply {
         std::string id = req.param("vma_id");
         TunnelSessionEnd end = pairing.revoke(id);
         json out = vma_json(vmas.get_vma(id));
         out["session_ended"] = end.outcome == TunnelSessionEnd::Outcome::Ended;
         out["session_pid"] = end.pid ? json(*end.pid) : json(nullptr);
         out["session_outcome"] = outcome_name(end.outcome);
         out["session_detail"] = end.message;
         out["warning"] = nullptr;
         if (pairing.tunnel_state(vmas.get_vma(id)) == "up")
           out["warning"] = fmt::format(
               "something still listens on the VMA's tunnel port 127.0.0.1:{} and this OMA could not end it ({}): "
               "end it by hand; the VMA's key is already removed",
               out["tunnel_port"].get<int64_t>(), end.message);
         return {200, out, ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vmas/{vma_id}/health",
      .operation_id = "getVmaHealth",
      .tag = &kVmasTag,
      .summary = "A VMA's health through its tunnel, and the tunnel's state",
      .description = "Whether the VMA's tunnel port answers on the OMA and, if it does, the VMA's own report "
                     "(vCenter reachable, tunnel up).",
      .role = "viewer",
      .params = {vma_param()},
      .responses = {{200, "the health", &kVmaHealthReport}, {404, "no such VMA"}},
      .handler = [&pairing](auto& req, auto&, auto&) -> Reply {
         return {200, pairing.health(req.param("vma_id")), ""};
       }});
  routes.push_back({
      .method = "GET",
      .path = "/api/v1/vmas/{vma_id}/discover",
      .operation_id = "discoverThroughVma",
      .tag = &kVmasTag,
      .summary = "The VMs of this VMA's vCenter with disks and NICs (through its tunnel), each marked managed if added",
      .description = "Asks an approved VMA, through its tunnel, for its vCenter's VMs with their disks and NICs; "
                     "each is marked managed when the OMA has it already.",
      .role = "viewer",
      .params = {vma_param()},
      .responses = {{200, "the VMs", &kVmaDiscovery},
                    {404, "no such VMA"},
                    {409, "the VMA is not approved"},
                    {502, "the VMA did not answer (tunnel down?)"}},
      .handler = [&vmas, &vms, &pairing](auto& req, auto&, auto&) -> Reply {
         VmaRecord v = vmas.get_vma(req.param("vma_id"));
         if (v.state != VmaState::Approved)
           return error_reply(409, fmt::format("VMA {} ({}) is {}: approve it first", v.vma_id, v.name, v.state));
         protocol::Discovery d;
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
