// The OMA<->VMA protocol: the messages of the VMA's API, which the OMA calls through
// the SSH reverse tunnel (OMA 127.0.0.1:9081 -> VMA 127.0.0.1:8081). The OMA's client
// (src/oma/vma/vma_client.h), the VMA's server (src/vma/api/) and the OMA tests' fake
// VMA all use these types; nothing else reads or writes these bodies.
//
// JSON over HTTP under /api/v1 (routes.h). Every request carries "Authorization: Bearer
// <token>" (the token the OMA issued at pairing; 401 without it) and every request and
// answer "MigrateKit-Protocol: <version>" (version.h). Bodies are validated strictly on
// both sides: unknown fields, missing fields, wrong types, out-of-range numbers and
// words outside an enum are refused with a schema::FieldError naming the field by its
// JSON path ("disks[1].export"); the VMA answers such a request 400 ErrorReply with
// "field" set, the OMA fails the call.
//
//   POST /api/v1/replicate        ReplicateRequest -> 202 ReplicateAccepted
//     Starts copying one job's disks. Idempotent: the same job_id again answers 202
//     without starting a second copy (409 when the job_id is known for another VM).
//     export must be exactly migration-vm-{vm_id}-disk{unit}; change_id_base is null
//     for every disk of a full pass and set for at least one disk of an incremental one
//     (a disk grown since the last pass has none: it is copied in full within it).
//
//   GET  /api/v1/progress/{job_id}                     -> 200 JobProgress
//     404 when the VMA does not know the job (it restarted, or the record expired).
//     vma_instance changes when the VMA restarts: the OMA fails a job whose instance
//     changed, since the copy that was running is gone. A disk carries change_id only
//     once it is completed (copied and flushed) and error only once it failed.
//     Each disk carries the time its pass spent in each PassPhase so far (monotonic
//     clock on the VMA), in the phases' order, each at most once: snapshot (the VM's
//     snapshot, shared by its disks), change_query (this disk's), reader_start (this
//     disk's share of the wait for the readers, which start while vCenter answers the
//     change queries), planning, copying and flushing (this disk's copy), snapshot_removal (the VM's,
//     once the job ended). reporting is never sent: the OMA adds it (from the job's
//     end on the VMA to its own record, see ended_seconds_ago). ended_seconds_ago is
//     set once the job ended: how long before this answer it did.
//
//   GET  /api/v1/progress/{job_id}?after=R&wait_ms=N   -> 200 JobProgress (long poll)
//     The same answer, given when the job's revision differs from R (at once when it
//     does already; R absent: at once) or after N ms (0..kMaxProgressWaitMs) at the
//     latest. The revision is a number the VMA raises at every change of the job's
//     status, of a disk's status or phase and at a disk's end, and for a disk's bytes
//     at most every kProgressRevisionInterval; it starts again from 0 when the VMA
//     restarts (a new vma_instance), so a revision that went backwards is a new one.
//     The answer carries `revision` only when the VMA held the request this way: an
//     answer without it (a VMA too busy to hold one more request) is to be polled
//     again after the caller's own interval. The query is not signed (request_auth.h
//     signs the path): it decides only when the signed answer comes.
//
//   POST /api/v1/stop/{job_id}    {}                   -> 200 StopReply
//     Cancels the copy and answers once the job's snapshot is removed; 404 unknown job.
//
//   POST /api/v1/cleanup/{vm_id}  {}                   -> 200 CleanupReply
//     Removes every snapshot of ours on that VM (after a crash, before a cutover); 423
//     while a job of the VM is copying.
//
//   POST /api/v1/power/{vm_id}    PowerRequest         -> 200 PowerReply
//     shutdown = guest shutdown, then power off if the guest is still on after
//     timeout_seconds ("forced": true). Answers when the VM is in the asked state.
//
//   GET  /api/v1/discover                              -> 200 Discovery
//     Each VM carries its preflight findings (absent from an older VMA: none known).
//
//   GET  /api/v1/preflight/{vm_id}                     -> 200 PreflightReply
//     What would refuse a pass of the VM (independent, RDM or shared disks, snapshots
//     of its own, encryption, CBT that cannot be enabled, ...), read afresh from
//     vCenter; nothing is changed. 404 for an unknown VM.
//
//   GET  /api/v1/vms/{vm_id}                           -> 200 DiscoveredVm
//     One VM as discover shows it (disks, NICs, power, preflight findings), read afresh
//     from vCenter without listing the inventory: what a pass needs to know of its VM.
//     404 for an unknown VM.
//
//   GET  /api/v1/health                                -> 200 Health
//     tunnels: one entry per SSH tunnel the VMA holds (one per OMA node of the service;
//     one with node_id "" for a single OMA); tunnel: all of them in one (up only when
//     every one is up; otherwise the first that is not, its error naming the node).
//
//   POST /api/v1/service-nodes    ServiceNodes         -> 200 ServiceNodesReply
//     The OMA nodes of the service this VMA is paired with, as the nodes' registry
//     says now (several OMA nodes over one database: live leases only). Any node sends
//     it (each node's VMA sync round, oma/pairing/vma_node_sync.h); the VMA stores the
//     list in its paired state and holds one tunnel to each node in it, starting and
//     stopping tunnels to match; the answer is each tunnel's state. An empty list is
//     refused (400): the VMA would lose every node. A VMA paired with a single OMA
//     takes it too (that OMA became a service of nodes): its one tunnel gives way to
//     the nodes'. A VMA that holds no tunnel (not paired, --no-tunnel) answers 409.
//
// vm_id is the vSphere instance UUID. Errors are ErrorReply {"error": what failed, on
// which VM/disk, what to do} with 4xx/5xx: 400 bad input, 401 token, 404 unknown job or
// VM, 423 VM busy, 426 protocol version, 502 vCenter failed, 503 VMA stopping.
//
// encode() builds the JSON of a message and checks it like decode() does (a sender
// never puts a message on the wire that its peer must refuse); free text (errors) is
// made printable and short first. decode() validates and converts, throwing
// schema::FieldError. Values and free functions; thread-safe.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/json_schema.h"
#include "protocol/enums.h"
#include "protocol/names.h"
#include "protocol/version.h"

namespace mk::protocol {

// --- replicate ----------------------------------------------------------------------

struct NbdTarget {
  std::string host;  // host name or IP address of the OMA's NBD server
  int port = 10809;
  NbdTls tls = NbdTls::Psk;  // the VMA's PSK, or its X.509 client certificate, from pairing
};

struct ReplicateDisk {
  DiskKey disk_key;
  int64_t unit = 0;
  int64_t capacity_bytes = 0;
  std::string export_name;                    // "export" on the wire
  std::optional<std::string> change_id_base;  // null: a full copy of this disk
};

struct ReplicateRequest {
  std::string job_id, vm_id;
  PassKind kind = PassKind::Full;
  NbdTarget nbd;
  std::vector<ReplicateDisk> disks;  // 1..256, keys and units unique
};

struct ReplicateAccepted {
  std::string job_id, vma_instance;
};

// --- progress, stop, cleanup ----------------------------------------------------------

// How long one part of a pass took (seconds >= 0).
struct PhaseTime {
  PassPhase phase = PassPhase::Snapshot;
  double seconds = 0;
  bool operator==(const PhaseTime&) const = default;
};

struct DiskProgress {
  DiskKey disk_key;
  DiskStatus status = DiskStatus::Pending;
  DiskPhase phase = DiskPhase::Pending;
  int64_t bytes_done = 0, bytes_total = 0;  // against the pass's plan, not the capacity
  double throughput_bps = 0, eta_seconds = 0;
  std::optional<std::string> change_id;  // set exactly when completed
  std::optional<std::string> error;      // set when failed
  // A pass resumed after an interruption (VMA restart, NBD outage): the bytes of the
  // plan an earlier run had copied and flushed, which this run did not copy again
  // (included in bytes_done). 0 for a pass that was never interrupted.
  int64_t bytes_resumed = 0;
  // Why the disk started over instead of resuming (the pass's snapshot was gone, its
  // checkpoint did not match): set once it happened, for the job's record.
  std::optional<std::string> restarted;
  std::vector<PhaseTime> phases;         // phases ended so far, in PassPhase order, each once
};

struct ProgressTotals {
  int64_t bytes_done = 0, bytes_total = 0;  // over the disks
  double throughput_bps = 0;                // of the disks copying
};

struct JobProgress {
  std::string job_id, vma_instance;
  VmaJobStatus status = VmaJobStatus::Queued;
  std::optional<std::string> error;  // why the job failed or stopped
  std::vector<DiskProgress> disks;
  ProgressTotals total;
  std::optional<double> ended_seconds_ago;  // set once the job ended: seconds before this answer
  // The job's revision on the VMA when the request was a long poll it held (see the
  // route above); absent otherwise.
  std::optional<int64_t> revision;
};

// Long polling of progress (protocol version 6).
inline constexpr int64_t kMaxProgressWaitMs = 10000;
inline constexpr int64_t kProgressRevisionIntervalMs = 250;  // byte progress raises the revision at most this often
struct ProgressWait {
  std::optional<int64_t> after;  // the revision the caller has; nullopt: none yet (answer at once)
  int64_t wait_ms = 0;           // 0..kMaxProgressWaitMs
};
// The query of a long poll: "after=R&wait_ms=N" (or "wait_ms=N").
std::string progress_query(const ProgressWait& w);
// From the query's values as received (nullopt: absent); throws schema::FieldError
// naming "after" or "wait_ms".
ProgressWait parse_progress_wait(const std::optional<std::string>& after, const std::string& wait_ms);

struct StopReply {
  std::string job_id;
  bool stopped = true;
};

struct CleanupReply {
  std::string vm_id;
  int snapshots_removed = 0;
};

// --- power ----------------------------------------------------------------------------

struct PowerRequest {
  PowerAction action = PowerAction::Shutdown;
  int timeout_seconds = 300;  // 1..86400; optional on the wire (300)
};

struct PowerReply {
  std::string vm_id;
  PowerState power_state = PowerState::PoweredOff;  // poweredOn or poweredOff
  bool forced = false;                              // a shutdown ended with a power off
};

// --- discover, preflight ---------------------------------------------------------------

// What would refuse a pass of the VM (the VMA's vSphere preflight, vsphere/preflight.h).
struct PreflightFinding {
  std::string code;                 // stable identifier: "independent-disk", "rdm-physical", ...
  std::optional<DiskKey> disk_key;  // none: about the whole VM
  std::string problem, remedy;      // what is wrong, what to do
  std::string text;                 // all of it in one line, naming the VM and disk
};

struct PreflightReply {
  std::string vm_id;
  std::vector<PreflightFinding> findings;  // empty: nothing known stands in the way
};

struct DiscoveredDisk {
  DiskKey disk_key;
  int64_t unit = 0;   // position in controller/unit order: unique within the VM
  std::string label;  // "Hard disk 1"
  int64_t capacity_bytes = 0;
};

struct DiscoveredNic {
  std::string key;      // VMware device key (digits)
  std::string mac;      // "00:50:56:aa:bb:cc"; "" until vSphere assigned one
  std::string network;  // port group name
};

struct DiscoveredVm {
  std::string vm_id, name, datacenter;
  PowerState power_state = PowerState::PoweredOff;
  std::string guest_os;  // vSphere guest id ("ubuntu64Guest"), may be ""
  int cpus = 0;
  int64_t memory_mb = 0;
  std::vector<DiscoveredDisk> disks;
  std::vector<DiscoveredNic> nics;
  std::vector<PreflightFinding> findings;  // empty: nothing known refuses a pass
  std::string firmware;    // vSphere's config.firmware: "bios", "efi"; "" from an older VMA (not known)
  bool secure_boot = false;  // config.bootOptions.efiSecureBootEnabled
};

struct Discovery {
  std::string vcenter;  // host name of the VMA's vCenter
  std::vector<DiscoveredVm> vms;
};

// --- health ---------------------------------------------------------------------------

struct VcenterHealth {
  bool reachable = false;
  std::optional<std::string> error;
};

struct TunnelHealth {
  TunnelState state = TunnelState::Down;
  int64_t since = 0;                 // unix seconds of the last change of state
  std::optional<std::string> error;  // why it is not up, when known
};

// One SSH tunnel of the VMA: to which node, and its state.
struct NodeTunnel {
  std::string node_id;  // "" for the single OMA of a pairing without nodes
  std::string ssh_host;
  int ssh_port = 22;
  TunnelHealth tunnel;
};

struct Health {
  int protocol_version = kVersion;
  HealthStatus status = HealthStatus::Degraded;  // ok: vCenter reachable and every tunnel up
  std::string vma_instance;
  VcenterHealth vcenter;
  TunnelHealth tunnel;              // every tunnel in one: up only when all are up
  std::vector<NodeTunnel> tunnels;  // each tunnel (one per OMA node)
};

// --- service nodes ----------------------------------------------------------------------

// One OMA node of a service (several `oma` processes over one database), as a VMA needs
// it to hold a tunnel to it: its sshd and pinned host key, the loopback address on the
// node where the reverse forward listens (127.0.0.1 unless several nodes share one
// machine), and its NBD server (for NBD inside SSH: the forward that reaches it).
struct ServiceNode {
  std::string node_id;       // [a-z0-9][a-z0-9._-]{0,63}
  std::string ssh_host;
  int ssh_port = 22;
  std::string ssh_host_key;  // "ssh-ed25519 AAAA...": pinned by the VMA
  std::string tunnel_address = "127.0.0.1";  // 127.x.y.z
  std::string nbd_host;
  int nbd_port = 10809;
  bool operator==(const ServiceNode&) const = default;
};
inline constexpr size_t kMaxServiceNodes = 64;

struct ServiceNodes {
  std::vector<ServiceNode> nodes;  // 1..kMaxServiceNodes, node ids unique
};

struct ServiceNodesReply {
  std::vector<NodeTunnel> tunnels;  // the tunnels once the list is applied
};

// --- bodies without fields, errors ----------------------------------------------------

// The body of stop and cleanup: {}.
struct EmptyRequest {};

struct ErrorReply {
  std::string error;
  std::optional<std::string> field;  // the JSON path of the field at fault (400)
};

// --- JSON -----------------------------------------------------------------------------

nlohmann::json encode(const ReplicateRequest& m);
nlohmann::json encode(const ReplicateAccepted& m);
nlohmann::json encode(const DiskProgress& m);
nlohmann::json encode(const JobProgress& m);
nlohmann::json encode(const StopReply& m);
nlohmann::json encode(const CleanupReply& m);
nlohmann::json encode(const PowerRequest& m);
nlohmann::json encode(const PowerReply& m);
nlohmann::json encode(const DiscoveredVm& m);
nlohmann::json encode(const Discovery& m);
nlohmann::json encode(const PreflightFinding& m);
nlohmann::json encode(const PreflightReply& m);
nlohmann::json encode(const Health& m);
nlohmann::json encode(const EmptyRequest& m);
nlohmann::json encode(const ErrorReply& m);
nlohmann::json encode(const ServiceNode& m);
nlohmann::json encode(const ServiceNodes& m);
nlohmann::json encode(const ServiceNodesReply& m);

void decode(const nlohmann::json& j, ReplicateRequest& out);
void decode(const nlohmann::json& j, ReplicateAccepted& out);
void decode(const nlohmann::json& j, DiskProgress& out);
void decode(const nlohmann::json& j, JobProgress& out);
void decode(const nlohmann::json& j, StopReply& out);
void decode(const nlohmann::json& j, CleanupReply& out);
void decode(const nlohmann::json& j, PowerRequest& out);
void decode(const nlohmann::json& j, PowerReply& out);
void decode(const nlohmann::json& j, DiscoveredVm& out);
void decode(const nlohmann::json& j, Discovery& out);
void decode(const nlohmann::json& j, PreflightFinding& out);
void decode(const nlohmann::json& j, PreflightReply& out);
void decode(const nlohmann::json& j, Health& out);
void decode(const nlohmann::json& j, EmptyRequest& out);
void decode(const nlohmann::json& j, ErrorReply& out);
void decode(const nlohmann::json& j, ServiceNode& out);
void decode(const nlohmann::json& j, ServiceNodes& out);
void decode(const nlohmann::json& j, ServiceNodesReply& out);

template <typename T>
T decode(const nlohmann::json& j) {
  T out;
  decode(j, out);
  return out;
}
// A body as received: JSON text, an object, then decode(). `what` names the whole body
// in errors ("body", "answer").
template <typename T>
T decode_text(const std::string& text, const std::string& what = "body") {
  return decode<T>(schema::parse_object(text, what));
}

// Free text (an error message) as the protocol carries it: control characters become
// spaces, and it is cut at kMaxTextBytes.
inline constexpr size_t kMaxTextBytes = 4096;
std::string printable_text(std::string_view s);

// --- schemas (the same declarations serve validation and the OpenAPI document) ---------
//
// Built on first use (other modules' schema constants refer to them during static
// initialisation); the references stay valid for the program's life.

namespace schemas {
const schema::Schema& replicate_request();
const schema::Schema& replicate_accepted();
const schema::Schema& phase_time();
const schema::Schema& disk_progress();
const schema::Schema& job_progress();
const schema::Schema& stop_reply();
const schema::Schema& cleanup_reply();
const schema::Schema& power_request();
const schema::Schema& power_reply();
const schema::Schema& discovered_disk();
const schema::Schema& discovered_nic();
const schema::Schema& preflight_finding();
const schema::Schema& preflight_reply();
const schema::Schema& discovered_vm();
const schema::Schema& discovery();
const schema::Schema& health();
const schema::Schema& empty_request();
const schema::Schema& node_tunnel();
const schema::Schema& service_node();
const schema::Schema& service_nodes();
const schema::Schema& service_nodes_reply();
const schema::Schema& error_reply();
}  // namespace schemas

}  // namespace mk::protocol
