#include "protocol/messages.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "protocol/codec.h"

namespace mk::protocol {

using nlohmann::json;
using schema::Field;
using schema::FieldError;
using schema::Schema;
using Type = Field::Type;
using codec::checked;
using codec::host_check;
using codec::opt;
using codec::opt_of;
using codec::uuid_check;

// --- field checks -----------------------------------------------------------------------

namespace {

void disk_key_check(const std::string& v, const std::string& path) { DiskKey::parse(v, path); }
void device_key_check(const std::string& v, const std::string& path) {
  if (!DiskKey::valid(v)) throw FieldError(path, "expected a VMware device key (a number, like 4000)");
}
void export_check(const std::string& v, const std::string& path) {
  if (!is_export_name(v)) throw FieldError(path, "expected an export name migration-vm-{vm_id}-disk{unit}");
}
void not_empty_check(const std::string& v, const std::string& path) {
  if (v.empty()) throw FieldError(path, "must not be empty");
}
void node_id_check(const std::string& v, const std::string& path) {
  bool ok = !v.empty() && v.size() <= 64 && v.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789._-") ==
                                                std::string::npos && v[0] != '.' && v[0] != '_' && v[0] != '-';
  if (!ok) throw FieldError(path, "expected a node id (1 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit)");
}
// "" names the single OMA of a pairing without nodes.
void tunnel_node_id_check(const std::string& v, const std::string& path) {
  if (!v.empty()) node_id_check(v, path);
}
// A host key as known_hosts holds it: "<type> <base64> [comment]".
void ssh_host_key_check(const std::string& v, const std::string& path) {
  std::string_view b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
  auto sp = v.find(' ');
  std::string type = v.substr(0, sp);
  std::string blob = sp == std::string::npos ? "" : v.substr(sp + 1, v.find(' ', sp + 1) - sp - 1);
  if ((!type.starts_with("ssh-") && !type.starts_with("ecdsa-")) ||
      type.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-@.") != std::string::npos || blob.empty() ||
      blob.find_first_not_of(b64) != std::string::npos)
    throw FieldError(path, "expected an SSH public key line (\"ssh-ed25519 AAAA...\")");
}
// An IPv4 loopback address (127.0.0.0/8), dotted: where the node's sshd listens for the
// VMA's reverse forward.
void loopback_check(const std::string& v, const std::string& path) {
  int a = 0, b = 0, c = 0, d = 0;
  char tail = 0;
  if (std::sscanf(v.c_str(), "%d.%d.%d.%d%c", &a, &b, &c, &d, &tail) != 4 || a != 127 || b < 0 || b > 255 || c < 0 ||
      c > 255 || d < 0 || d > 255 || v.find_first_not_of("0123456789.") != std::string::npos)
    throw FieldError(path, "expected an IPv4 loopback address (127.x.y.z)");
}
void mac_check(const std::string& v, const std::string& path) {
  if (!v.empty() && !is_mac_address(v)) throw FieldError(path, "expected a MAC address like 00:50:56:aa:bb:cc");
}

template <typename E>
Field enum_field(std::string name, std::string description) {
  return {.name = std::move(name), .description = std::move(description), .max_length = 32, .one_of = enum_names<E>()};
}

Field uuid_field(std::string name, std::string description) {
  return {.name = std::move(name),
          .description = std::move(description),
          .max_length = 36,
          .check = uuid_check,
          .example = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d",
          .pattern = kUuidPattern};
}

Field string_field(std::string name, std::string description, std::string example, size_t max_length = 255) {
  return {.name = std::move(name),
          .description = std::move(description),
          .max_length = max_length,
          .example = std::move(example)};
}

Field int_field(std::string name, std::string description, int64_t example, int64_t min = 0,
                int64_t max = std::numeric_limits<int64_t>::max()) {
  return {.name = std::move(name),
          .type = Type::Integer,
          .description = std::move(description),
          .min = min,
          .max = max,
          .example = example};
}

Field number_field(std::string name, std::string description, double example) {
  return {.name = std::move(name), .type = Type::Number, .description = std::move(description), .example = example};
}

Field bool_field(std::string name, std::string description, bool example) {
  return {.name = std::move(name), .type = Type::Boolean, .description = std::move(description), .example = example};
}

// The same field, which a message may leave out (added after version 1 of the contract).
Field may_be_absent(Field f) {
  f.required = false;
  return f;
}

Field object_field(std::string name, std::string description, const Schema* schema) {
  return {.name = std::move(name), .type = Type::Object, .description = std::move(description), .items = schema};
}

Field array_field(std::string name, std::string description, size_t max_items, const Schema* items) {
  return {.name = std::move(name),
          .type = Type::Array,
          .description = std::move(description),
          .max_length = max_items,
          .items = items};
}

// Free text that may be null (errors): made printable by the sender (printable_text).
Field text_field(std::string name, std::string description, std::string example) {
  return {.name = std::move(name),
          .description = std::move(description),
          .max_length = kMaxTextBytes,
          .nullable = true,
          .example = std::move(example)};
}

Field change_id_field(std::string name, std::string description) {
  return {.name = std::move(name),
          .description = std::move(description),
          .max_length = 200,
          .check = not_empty_check,
          .nullable = true,
          .example = "52 3c 1f 2a 9d 0e 4b 77-aa 10 5c 3e 2d 1f 0b 9a/17",
          .pattern = "."};
}

Field disk_key_field() {
  return {.name = "disk_key",
          .description = "VMware device key of the disk (decimal, no leading zeros)",
          .max_length = 10,
          .check = disk_key_check,
          .example = "2000",
          .pattern = kDiskKeyPattern};
}

constexpr int64_t kMaxCapacity = int64_t{1} << 50;

const Schema kNbdTarget{{
    {.name = "host",
     .description = "the OMA's NBD server as the VMA reaches it",
     .max_length = 253,
     .check = host_check,
     .example = "10.0.0.5",
     .pattern = kHostPattern},
    int_field("port", "its port", 10809, 1, 65535),
    {.name = "tls",
     .description = "how the VMA authenticates to the OMA's NBD server (always TLS): psk, its key from pairing; "
                    "x509, its client certificate from pairing",
     .max_length = 8,
     .one_of = {"psk", "x509"}},
}};

const Schema kReplicateDisk{
    {
        disk_key_field(),
        int_field("unit", "the N of diskN in the export name", 0, 0, 255),
        int_field("capacity_bytes", "the disk's size", 10737418240, 1, kMaxCapacity),
        {.name = "export",
         .description = "migration-vm-{vm_id}-disk{unit}",
         .max_length = 64,
         .check = export_check,
         .example = "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk0",
         .pattern = kExportNamePattern},
        change_id_field("change_id_base", "the change ID of the last committed pass; null for a full copy"),
    },
    "ReplicateDisk",
    "one disk of a replication pass: where it goes and where it starts from"};

const Schema kProgressTotals{{
    int_field("bytes_done", "over the disks", 3221225472),
    int_field("bytes_total", "over the disks", 10737418240),
    number_field("throughput_bps", "summed over the disks copying", 157286400.0),
}};

const Schema kVcenterHealth{{
    bool_field("reachable", "the VMA's vCenter session works", true),
    text_field("error", "why vCenter cannot be reached; null when it can",
               "vCenter vc.example cannot be reached or refused the login: connection refused"),
}};

const Schema kTunnelHealth{{
    enum_field<TunnelState>("state", "the VMA's SSH control tunnel to the OMA"),
    int_field("since", "unix seconds of the last change of state", 1764673200),
    text_field("error", "why the tunnel is not up, when known", "ssh: connect to host oma port 22: Connection refused"),
}};

Field node_id_field(bool may_be_empty) {
  return {.name = "node_id",
          .description = may_be_empty ? "the OMA node (\"\": the single OMA of a pairing without nodes)"
                                      : "the OMA node's id",
          .max_length = 64,
          .check = may_be_empty ? tunnel_node_id_check : node_id_check,
          .example = "oma-a"};
}

Field host_field(std::string name, std::string description) {
  return {.name = std::move(name),
          .description = std::move(description),
          .max_length = 253,
          .check = host_check,
          .example = "oma-a.example.local",
          .pattern = kHostPattern};
}

}  // namespace

namespace schemas {

const Schema& replicate_request() {
  static const Schema s{
      {
          uuid_field("job_id", "the OMA's job"),
          uuid_field("vm_id", "vSphere instance UUID of the VM"),
          enum_field<PassKind>("kind",
                               "full: every allocated area; incremental: the areas changed since each "
                               "disk's change_id_base"),
          object_field("nbd", "the OMA's NBD server", &kNbdTarget),
          array_field("disks", "1 to 256 disks, keys and units unique", 256, &kReplicateDisk),
      },
      "ReplicateRequest",
      "Start copying one job's disks into the OMA's exports"};
  return s;
}

const Schema& replicate_accepted() {
  static const Schema s{
      {
          uuid_field("job_id", "the job accepted"),
          uuid_field("vma_instance", "this run of the VMA (changes when it restarts)"),
      },
      "ReplicateAccepted",
      "the VMA took the job"};
  return s;
}

const Schema& phase_time() {
  static const Schema s{
      {
          enum_field<PassPhase>("phase", "a part of the pass"),
          number_field("seconds", "how long it took (>= 0)", 0.42),
      },
      "PhaseTime",
      "how long one part of a pass took"};
  return s;
}

const Schema& disk_progress() {
  static const Schema s{
      {
          disk_key_field(),
          enum_field<DiskStatus>("status", "pending, copying, completed (copied and flushed) or failed"),
          enum_field<DiskPhase>("phase", "what the copy of this disk is doing"),
          int_field("bytes_done", "bytes copied of the pass's plan", 1073741824),
          int_field("bytes_total", "bytes in the pass's plan", 4294967296),
          number_field("throughput_bps", "bytes per second", 157286400.0),
          number_field("eta_seconds", "seconds left at this rate", 20.5),
          change_id_field("change_id", "the disk's new change ID: set exactly when the disk is completed"),
          text_field("error", "why the disk failed: set when it failed",
                     "disk 2000 (Hard disk 1) of VM 4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d: copy failed: ..."),
          may_be_absent(int_field("bytes_resumed",
                             "bytes of the plan an interrupted run of this pass had copied and flushed: resumed, "
                             "not copied again (part of bytes_done)",
                             536870912)),
          may_be_absent(text_field("restarted",
                              "why this disk started over instead of resuming an interrupted run",
                              "the pass's snapshot 5-snapshot-12 is gone: the disk starts over on a new snapshot")),
          array_field("phases", "time spent per part of the pass so far, in order, each part at most once",
                      enum_names<PassPhase>().size(), &phase_time()),
      },
      "DiskProgress",
      "one disk of a job as the VMA copies it"};
  return s;
}

const Schema& job_progress() {
  static const Schema s{
      {
          uuid_field("job_id", "the job"),
          uuid_field("vma_instance", "this run of the VMA (changes when it restarts)"),
          enum_field<VmaJobStatus>("status", "the job as a whole on the VMA"),
          text_field("error", "why the job failed or stopped", "interrupted: the VMA restarted during this pass"),
          array_field("disks", "every disk of the job", 256, &disk_progress()),
          object_field("total", "the disks together", &kProgressTotals),
          {.name = "ended_seconds_ago",
           .type = Type::Number,
           .description = "set once the job ended on the VMA: how many seconds before this answer",
           .nullable = true,
           .example = 0.12},
          may_be_absent(int_field("revision",
                                  "the job's revision on the VMA, in answers to a long poll it held "
                                  "(?after=R&wait_ms=N)",
                                  42)),
      },
      "JobProgress",
      "a job's progress on the VMA"};
  return s;
}

const Schema& stop_reply() {
  static const Schema s{
      {
          uuid_field("job_id", "the job stopped"),
          bool_field("stopped", "the copy is cancelled and its snapshot removed", true),
      },
      "StopReply",
      "the job is stopped"};
  return s;
}

const Schema& cleanup_reply() {
  static const Schema s{
      {
          uuid_field("vm_id", "the VM cleaned up"),
          int_field("snapshots_removed", "snapshots of ours the VMA removed", 1, 0, 1000000),
      },
      "CleanupReply",
      "the VM's snapshots of ours are gone"};
  return s;
}

const Schema& power_request() {
  static const Schema s{
      {
          enum_field<PowerAction>("action", "shutdown (guest shutdown, power off after the timeout), off or on"),
          {.name = "timeout_seconds",
           .type = Type::Integer,
           .required = false,
           .description = "how long a guest shutdown may take (default 300)",
           .min = 1,
           .max = 86400,
           .example = 300},
      },
      "PowerRequest",
      "bring the source VM into a power state"};
  return s;
}

const Schema& power_reply() {
  static const Schema s{
      {
          uuid_field("vm_id", "the VM"),
          {.name = "power_state",
           .description = "the state the VM is in now",
           .max_length = 32,
           .one_of = {enum_name(PowerState::PoweredOn), enum_name(PowerState::PoweredOff)}},
          bool_field("forced", "a shutdown ended with a power off", false),
      },
      "PowerReply",
      "the VM is in the asked state"};
  return s;
}

const Schema& discovered_disk() {
  static const Schema s{
      {
          disk_key_field(),
          int_field("unit", "position in controller/unit order (the N of the export's diskN)", 0, 0, 255),
          string_field("label", "vCenter's label", "Hard disk 1"),
          int_field("capacity_bytes", "capacity in bytes", 17179869184, 0, kMaxCapacity),
      },
      "DiscoveredDisk",
      "a disk as the VMA found it"};
  return s;
}

const Schema& discovered_nic() {
  static const Schema s{
      {
          {.name = "key",
           .description = "VMware device key of the NIC",
           .max_length = 10,
           .check = device_key_check,
           .example = "4000",
           .pattern = kDiskKeyPattern},
          {.name = "mac",
           .description = "its MAC address; empty until vSphere assigned one",
           .max_length = 17,
           .check = mac_check,
           .example = "00:50:56:aa:bb:cc",
           .pattern = kMacOrEmptyPattern},
          string_field("network", "VMware network (port group)", "VM Network"),
      },
      "DiscoveredNic",
      "a network card as the VMA found it"};
  return s;
}

const Schema& preflight_finding() {
  static const Schema s{
      {
          {.name = "code",
           .description = "stable identifier of the problem",
           .max_length = 64,
           .check = not_empty_check,
           .example = "independent-disk"},
          {.name = "disk_key",
           .description = "VMware device key of the disk at fault; null for the whole VM",
           .max_length = 10,
           .check = disk_key_check,
           .nullable = true,
           .example = "2001",
           .pattern = kDiskKeyPattern},
          string_field("problem", "what is wrong", "the disk is independent: a snapshot does not capture it",
                       kMaxTextBytes),
          string_field("remedy", "what to do", "make the disk dependent (VM powered off), then discover again",
                       kMaxTextBytes),
          string_field("text", "all of it in one line, naming the VM and the disk",
                       "VM web01 disk Hard disk 2 ([ds1] web01/web01_1.vmdk): the disk is independent: ...",
                       kMaxTextBytes),
      },
      "PreflightFinding",
      "what would refuse a replication pass of the VM"};
  return s;
}

const Schema& preflight_reply() {
  static const Schema s{
      {
          uuid_field("vm_id", "the VM checked"),
          array_field("findings", "everything that would refuse a pass; empty when nothing does", 1000,
                      &preflight_finding()),
      },
      "PreflightReply",
      "a VM's preflight findings, read afresh from vCenter"};
  return s;
}

const Schema& discovered_vm() {
  static const Schema s{
      {
          uuid_field("vm_id", "vSphere instance UUID"),
          string_field("name", "its name in vCenter", "web01"),
          string_field("datacenter", "its datacenter", "DC1"),
          enum_field<PowerState>("power_state", "its power state, as vSphere says it"),
          string_field("guest_os", "vSphere guest id; may be empty", "debian12_64Guest"),
          int_field("cpus", "virtual CPUs", 2, 0, 4096),
          int_field("memory_mb", "memory in MiB", 4096, 0, int64_t{64} << 20),
          array_field("disks", "its disks", 256, &discovered_disk()),
          array_field("nics", "its network cards", 64, &discovered_nic()),
          {.name = "findings",
           .type = Type::Array,
           .required = false,
           .description = "what would refuse a pass of it (absent from an older VMA: none known)",
           .max_length = 1000,
           .items = &preflight_finding()},
          {.name = "firmware",
           .required = false,
           .description = "vSphere's firmware setting (absent from an older VMA: not known)",
           .max_length = 16,
           .one_of = {"bios", "efi"},
           .example = "efi"},
          may_be_absent(bool_field("secure_boot", "UEFI secure boot is on in vSphere (absent: off or not known)",
                                   false)),
      },
      "DiscoveredVm",
      "a VM as the VMA found it in vCenter"};
  return s;
}

const Schema& discovery() {
  static const Schema s{
      {
          string_field("vcenter", "host name of the VMA's vCenter", "vcenter.example.local"),
          array_field("vms", "every VM but templates", 100000, &discovered_vm()),
      },
      "Discovery",
      "the VMs of the VMA's vCenter"};
  return s;
}

const Schema& health() {
  static const Schema s{
      {
          int_field("protocol_version", "the OMA<->VMA protocol the VMA speaks", kVersion, 0, 1000000),
          enum_field<HealthStatus>("status", "ok when vCenter answers and the tunnel is up"),
          uuid_field("vma_instance", "this run of the VMA (changes when it restarts)"),
          object_field("vcenter", "its vCenter", &kVcenterHealth),
          object_field("tunnel", "its control tunnels to the OMA in one (up only when every one is up)",
                       &kTunnelHealth),
          array_field("tunnels", "each control tunnel (one per OMA node)", kMaxServiceNodes, &node_tunnel()),
      },
      "VmaHealth",
      "a VMA's health as it reports it"};
  return s;
}

const Schema& node_tunnel() {
  static const Schema s{
      {
          node_id_field(true),
          host_field("ssh_host", "the node's sshd"),
          int_field("ssh_port", "its SSH port", 22, 1, 65535),
          object_field("tunnel", "the tunnel's state", &kTunnelHealth),
      },
      "VmaNodeTunnel",
      "one SSH tunnel of the VMA, to one OMA node"};
  return s;
}

const Schema& service_node() {
  static const Schema s{
      {
          node_id_field(false),
          host_field("ssh_host", "the node's sshd, for its control tunnel"),
          int_field("ssh_port", "its SSH port", 22, 1, 65535),
          {.name = "ssh_host_key",
           .description = "its SSH public host key, pinned by the VMA",
           .max_length = 8192,
           .check = ssh_host_key_check,
           .example = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGv3i1Xg0cO2zV9yv6mJ0d8m1Q3m6p5K1n2Y3r4s5t6u"},
          {.name = "tunnel_address",
           .description = "the loopback address on the node where the VMA's reverse forward listens (127.0.0.1 "
                          "unless several nodes share one machine)",
           .max_length = 15,
           .check = loopback_check,
           .example = "127.0.0.1"},
          host_field("nbd_host", "the node's NBD server"),
          int_field("nbd_port", "its NBD port", 10809, 1, 65535),
      },
      "ServiceNode",
      "one OMA node of the service the VMA is paired with"};
  return s;
}

const Schema& service_nodes() {
  static const Schema s{
      {
          array_field("nodes", "the service's live nodes", kMaxServiceNodes, &service_node()),
      },
      "ServiceNodes",
      "the OMA nodes the VMA holds a tunnel to"};
  return s;
}

const Schema& service_nodes_reply() {
  static const Schema s{
      {
          array_field("tunnels", "each tunnel once the list is applied", kMaxServiceNodes, &node_tunnel()),
      },
      "ServiceNodesReply",
      "the VMA's tunnels to the service's nodes"};
  return s;
}

const Schema& empty_request() {
  static const Schema s{{}, "EmptyRequest", "No fields: {}"};
  return s;
}

const Schema& error_reply() {
  static const Schema s{
      {
          string_field("error", "what failed, on which VM/disk, what to do", "VM 4210a4c2-...: power off failed: ...",
                       kMaxTextBytes),
          {.name = "field",
           .required = false,
           .description = "the JSON path of the field at fault",
           .example = "disks[0].export"},
      },
      "VmaError",
      "why the VMA refused or failed a request"};
  return s;
}

}  // namespace schemas

// --- helpers ----------------------------------------------------------------------------

namespace {

json opt_text(const std::optional<std::string>& s) { return s ? json(printable_text(*s)) : json(nullptr); }
template <typename E>
E enum_of(const json& j, const char* name) {
  return parse_field<E>(j.at(name).get<std::string>(), name);  // validated: never throws
}
std::string shown(const std::string& s) { return printable_text(s.substr(0, 60)); }

// --- replicate -----------------------------------------------------------------------

void check_replicate(const json& j) {
  const json& disks = j["disks"];
  if (disks.empty()) throw FieldError("disks", "must hold 1 to 256 disks");
  bool incremental = j["kind"] == enum_name(PassKind::Incremental);
  std::string vm_id = j["vm_id"];
  std::set<std::string> keys;
  std::set<int64_t> units;
  bool any_base = false;
  for (size_t i = 0; i < disks.size(); ++i) {
    const json& d = disks[i];
    std::string at = fmt::format("disks[{}]", i);
    std::string expected = export_name(vm_id, d["unit"].get<int64_t>());
    if (d["export"] != expected) {
      throw FieldError(at + ".export", fmt::format("is \"{}\" but must be \"{}\"", shown(d["export"]), expected));
    }
    if (!incremental && d["change_id_base"].is_string()) {
      throw FieldError(at + ".change_id_base", "contradicts kind \"full\": a full pass has none");
    }
    if (d["change_id_base"].is_string()) any_base = true;
    if (!keys.insert(d["disk_key"].get<std::string>()).second) {
      throw FieldError(at + ".disk_key", fmt::format("disk key {} appears twice", d["disk_key"].get<std::string>()));
    }
    if (!units.insert(d["unit"].get<int64_t>()).second) {
      throw FieldError(at + ".unit", fmt::format("unit {} appears twice", d["unit"].get<int64_t>()));
    }
  }
  // An incremental pass may copy some disks in full (a disk grown since the last pass has
  // no base), but not all of them: that is a full pass.
  if (incremental && !any_base) {
    throw FieldError("disks[0].change_id_base", "contradicts kind \"incremental\": no disk has a base change ID");
  }
}

// A disk's change ID is there exactly when it completed; a failed disk says why.
void check_disk_progress(const json& d, const std::string& at) {
  auto path = [&](const char* f) { return at.empty() ? std::string(f) : at + "." + f; };
  bool completed = d["status"] == enum_name(DiskStatus::Completed);
  if (completed != d["change_id"].is_string()) {
    throw FieldError(path("change_id"), "a completed disk carries its new change ID, and only a completed disk");
  }
  if (d["status"] == enum_name(DiskStatus::Failed) && d["error"].is_null()) {
    throw FieldError(path("error"), "a failed disk says why");
  }
  // Phases in the order of a pass, each once, with a time that is a time.
  int last = -1;
  for (size_t i = 0; i < d["phases"].size(); ++i) {
    const json& p = d["phases"][i];
    std::string at_i = path("phases") + fmt::format("[{}]", i);
    int index = static_cast<int>(enum_of<PassPhase>(p, "phase"));
    if (index <= last) throw FieldError(at_i + ".phase", "phases come in the order of a pass, each at most once");
    last = index;
    double seconds = p["seconds"].get<double>();
    if (!(seconds >= 0) || !std::isfinite(seconds)) throw FieldError(at_i + ".seconds", "must be a number >= 0");
  }
}

std::vector<PhaseTime> phases_of(const json& d) {
  std::vector<PhaseTime> out;
  for (const auto& p : d["phases"]) out.push_back({enum_of<PassPhase>(p, "phase"), p["seconds"].get<double>()});
  return out;
}

json phases_json(const std::vector<PhaseTime>& phases) {
  json out = json::array();
  for (const auto& p : phases) out.push_back({{"phase", enum_name(p.phase)}, {"seconds", p.seconds}});
  return out;
}

void check_one_disk_progress(const json& d) { check_disk_progress(d, ""); }

void check_progress(const json& j) {
  if (j["ended_seconds_ago"].is_number()) {
    double ago = j["ended_seconds_ago"].get<double>();
    if (!(ago >= 0) || !std::isfinite(ago)) throw FieldError("ended_seconds_ago", "must be a number >= 0");
  }
  std::set<std::string> keys;
  for (size_t i = 0; i < j["disks"].size(); ++i) {
    const json& d = j["disks"][i];
    std::string at = fmt::format("disks[{}]", i);
    check_disk_progress(d, at);
    if (!keys.insert(d["disk_key"].get<std::string>()).second) {
      throw FieldError(at + ".disk_key", fmt::format("disk key {} appears twice", d["disk_key"].get<std::string>()));
    }
  }
}

json disk_progress_json(const DiskProgress& d) {
  return {{"disk_key", d.disk_key.str()},
          {"status", enum_name(d.status)},
          {"phase", enum_name(d.phase)},
          {"bytes_done", d.bytes_done},
          {"bytes_total", d.bytes_total},
          {"throughput_bps", d.throughput_bps},
          {"eta_seconds", d.eta_seconds},
          {"change_id", opt(d.change_id)},
          {"error", opt_text(d.error)},
          {"bytes_resumed", d.bytes_resumed},
          {"restarted", opt_text(d.restarted)},
          {"phases", phases_json(d.phases)}};
}

DiskProgress disk_progress_of(const json& d) {
  return {DiskKey::parse(d["disk_key"].get<std::string>()),
          enum_of<DiskStatus>(d, "status"),
          enum_of<DiskPhase>(d, "phase"),
          d["bytes_done"].get<int64_t>(),
          d["bytes_total"].get<int64_t>(),
          d["throughput_bps"].get<double>(),
          d["eta_seconds"].get<double>(),
          opt_of(d, "change_id"),
          opt_of(d, "error"),
          d.value("bytes_resumed", int64_t{0}),
          d.contains("restarted") ? opt_of(d, "restarted") : std::nullopt,
          phases_of(d)};
}

}  // namespace

std::string printable_text(std::string_view s) {
  std::string out(s.substr(0, kMaxTextBytes));
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
  }
  return out;
}

json encode(const ReplicateRequest& m) {
  json disks = json::array();
  for (const auto& d : m.disks) {
    disks.push_back({{"disk_key", d.disk_key.str()},
                     {"unit", d.unit},
                     {"capacity_bytes", d.capacity_bytes},
                     {"export", d.export_name},
                     {"change_id_base", opt(d.change_id_base)}});
  }
  json j = {{"job_id", m.job_id},
            {"vm_id", m.vm_id},
            {"kind", enum_name(m.kind)},
            {"nbd", {{"host", m.nbd.host}, {"port", m.nbd.port}, {"tls", enum_name(m.nbd.tls)}}},
            {"disks", disks}};
  return checked(std::move(j), schemas::replicate_request(), check_replicate);
}

void decode(const json& j, ReplicateRequest& out) {
  checked(j, schemas::replicate_request(), check_replicate);
  out.job_id = j["job_id"];
  out.vm_id = j["vm_id"];
  out.kind = enum_of<PassKind>(j, "kind");
  out.nbd = {j["nbd"]["host"], j["nbd"]["port"].get<int>(), enum_of<NbdTls>(j["nbd"], "tls")};
  out.disks.clear();
  for (const auto& d : j["disks"]) {
    out.disks.push_back({DiskKey::parse(d["disk_key"].get<std::string>()), d["unit"].get<int64_t>(),
                         d["capacity_bytes"].get<int64_t>(), d["export"], opt_of(d, "change_id_base")});
  }
}

json encode(const ReplicateAccepted& m) {
  return checked({{"job_id", m.job_id}, {"vma_instance", m.vma_instance}}, schemas::replicate_accepted());
}

void decode(const json& j, ReplicateAccepted& out) {
  checked(j, schemas::replicate_accepted());
  out = {j["job_id"], j["vma_instance"]};
}

// --- progress, stop, cleanup -------------------------------------------------------------

json encode(const DiskProgress& m) {
  return checked(disk_progress_json(m), schemas::disk_progress(), check_one_disk_progress);
}

void decode(const json& j, DiskProgress& out) {
  checked(j, schemas::disk_progress(), check_one_disk_progress);
  out = disk_progress_of(j);
}

json encode(const JobProgress& m) {
  json disks = json::array();
  for (const auto& d : m.disks) disks.push_back(disk_progress_json(d));
  json j = {{"job_id", m.job_id},
            {"vma_instance", m.vma_instance},
            {"status", enum_name(m.status)},
            {"error", opt_text(m.error)},
            {"disks", disks},
            {"total",
             {{"bytes_done", m.total.bytes_done},
              {"bytes_total", m.total.bytes_total},
              {"throughput_bps", m.total.throughput_bps}}},
            {"ended_seconds_ago", m.ended_seconds_ago ? json(*m.ended_seconds_ago) : json(nullptr)}};
  if (m.revision) j["revision"] = *m.revision;
  return checked(std::move(j), schemas::job_progress(), check_progress);
}

void decode(const json& j, JobProgress& out) {
  checked(j, schemas::job_progress(), check_progress);
  out.job_id = j["job_id"];
  out.vma_instance = j["vma_instance"];
  out.status = enum_of<VmaJobStatus>(j, "status");
  out.error = opt_of(j, "error");
  out.disks.clear();
  for (const auto& d : j["disks"]) out.disks.push_back(disk_progress_of(d));
  const json& t = j["total"];
  out.total = {t["bytes_done"].get<int64_t>(), t["bytes_total"].get<int64_t>(), t["throughput_bps"].get<double>()};
  out.ended_seconds_ago.reset();
  if (!j["ended_seconds_ago"].is_null()) out.ended_seconds_ago = j["ended_seconds_ago"].get<double>();
  out.revision.reset();
  if (j.contains("revision")) out.revision = j["revision"].get<int64_t>();
}

std::string progress_query(const ProgressWait& w) {
  std::string q = fmt::format("wait_ms={}", w.wait_ms);
  if (w.after) q = fmt::format("after={}&{}", *w.after, q);
  return q;
}

namespace {

int64_t query_integer(const std::string& text, const char* field, int64_t max) {
  int64_t v = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || v < 0 || v > max) {
    throw FieldError(field, fmt::format("must be an integer from 0 to {}", max));
  }
  return v;
}

}  // namespace

ProgressWait parse_progress_wait(const std::optional<std::string>& after, const std::string& wait_ms) {
  ProgressWait w;
  w.wait_ms = query_integer(wait_ms, "wait_ms", kMaxProgressWaitMs);
  if (after) w.after = query_integer(*after, "after", std::numeric_limits<int64_t>::max());
  return w;
}

json encode(const StopReply& m) { return checked({{"job_id", m.job_id}, {"stopped", m.stopped}}, schemas::stop_reply()); }

void decode(const json& j, StopReply& out) {
  checked(j, schemas::stop_reply());
  out = {j["job_id"], j["stopped"].get<bool>()};
}

json encode(const CleanupReply& m) {
  return checked({{"vm_id", m.vm_id}, {"snapshots_removed", m.snapshots_removed}}, schemas::cleanup_reply());
}

void decode(const json& j, CleanupReply& out) {
  checked(j, schemas::cleanup_reply());
  out = {j["vm_id"], j["snapshots_removed"].get<int>()};
}

// --- power -----------------------------------------------------------------------------

json encode(const PowerRequest& m) {
  return checked({{"action", enum_name(m.action)}, {"timeout_seconds", m.timeout_seconds}}, schemas::power_request());
}

void decode(const json& j, PowerRequest& out) {
  checked(j, schemas::power_request());
  out.action = enum_of<PowerAction>(j, "action");
  out.timeout_seconds = j.contains("timeout_seconds") ? j["timeout_seconds"].get<int>() : 300;
}

json encode(const PowerReply& m) {
  return checked({{"vm_id", m.vm_id}, {"power_state", enum_name(m.power_state)}, {"forced", m.forced}},
                 schemas::power_reply());
}

void decode(const json& j, PowerReply& out) {
  checked(j, schemas::power_reply());
  out = {j["vm_id"], enum_of<PowerState>(j, "power_state"), j["forced"].get<bool>()};
}

// --- discover, preflight -------------------------------------------------------------------

namespace {

json finding_json(const PreflightFinding& f) {
  return {{"code", f.code},
          {"disk_key", f.disk_key ? json(f.disk_key->str()) : json(nullptr)},
          {"problem", printable_text(f.problem)},
          {"remedy", printable_text(f.remedy)},
          {"text", printable_text(f.text)}};
}

PreflightFinding finding_of(const json& f) {
  std::optional<DiskKey> key;
  if (!f["disk_key"].is_null()) key = DiskKey::parse(f["disk_key"].get<std::string>());
  return {f["code"], key, f["problem"], f["remedy"], f["text"]};
}

json findings_json(const std::vector<PreflightFinding>& findings) {
  json out = json::array();
  for (const auto& f : findings) out.push_back(finding_json(f));
  return out;
}

std::vector<PreflightFinding> findings_of(const json& all) {
  std::vector<PreflightFinding> out;
  for (const auto& f : all) out.push_back(finding_of(f));
  return out;
}

json vm_json(const DiscoveredVm& m) {
  json disks = json::array(), nics = json::array();
  for (const auto& d : m.disks) {
    disks.push_back(
        {{"disk_key", d.disk_key.str()}, {"unit", d.unit}, {"label", d.label}, {"capacity_bytes", d.capacity_bytes}});
  }
  for (const auto& n : m.nics) nics.push_back({{"key", n.key}, {"mac", n.mac}, {"network", n.network}});
  json j = {{"vm_id", m.vm_id},
          {"name", m.name},
          {"datacenter", m.datacenter},
          {"power_state", enum_name(m.power_state)},
          {"guest_os", m.guest_os},
          {"cpus", m.cpus},
          {"memory_mb", m.memory_mb},
          {"disks", disks},
          {"nics", nics},
          {"findings", findings_json(m.findings)}};
  if (!m.firmware.empty()) j["firmware"] = m.firmware;
  if (m.secure_boot) j["secure_boot"] = true;
  return j;
}

DiscoveredVm vm_of(const json& j) {
  DiscoveredVm vm{j["vm_id"],
                  j["name"],
                  j["datacenter"],
                  enum_of<PowerState>(j, "power_state"),
                  j["guest_os"],
                  j["cpus"].get<int>(),
                  j["memory_mb"].get<int64_t>(),
                  {},
                  {},
                  {}};
  for (const auto& d : j["disks"]) {
    vm.disks.push_back({DiskKey::parse(d["disk_key"].get<std::string>()), d["unit"].get<int64_t>(), d["label"],
                        d["capacity_bytes"].get<int64_t>()});
  }
  for (const auto& n : j["nics"]) vm.nics.push_back({n["key"], n["mac"], n["network"]});
  if (j.contains("findings")) vm.findings = findings_of(j["findings"]);
  if (j.contains("firmware")) vm.firmware = j["firmware"];
  if (j.contains("secure_boot")) vm.secure_boot = j["secure_boot"];
  return vm;
}

}  // namespace

json encode(const DiscoveredVm& m) { return checked(vm_json(m), schemas::discovered_vm()); }

void decode(const json& j, DiscoveredVm& out) {
  checked(j, schemas::discovered_vm());
  out = vm_of(j);
}

json encode(const Discovery& m) {
  json vms = json::array();
  for (const auto& vm : m.vms) vms.push_back(vm_json(vm));
  return checked({{"vcenter", m.vcenter}, {"vms", std::move(vms)}}, schemas::discovery());
}

void decode(const json& j, Discovery& out) {
  checked(j, schemas::discovery());
  out.vcenter = j["vcenter"];
  out.vms.clear();
  for (const auto& v : j["vms"]) out.vms.push_back(vm_of(v));
}

json encode(const PreflightFinding& m) { return checked(finding_json(m), schemas::preflight_finding()); }

void decode(const json& j, PreflightFinding& out) {
  checked(j, schemas::preflight_finding());
  out = finding_of(j);
}

json encode(const PreflightReply& m) {
  return checked({{"vm_id", m.vm_id}, {"findings", findings_json(m.findings)}}, schemas::preflight_reply());
}

void decode(const json& j, PreflightReply& out) {
  checked(j, schemas::preflight_reply());
  out = {j["vm_id"], findings_of(j["findings"])};
}

// --- health, errors ----------------------------------------------------------------------

namespace {

json tunnel_json(const TunnelHealth& t) {
  return {{"state", enum_name(t.state)}, {"since", t.since}, {"error", opt_text(t.error)}};
}
TunnelHealth tunnel_of(const json& t) {
  return {enum_of<TunnelState>(t, "state"), t["since"].get<int64_t>(), opt_of(t, "error")};
}
json node_tunnels_json(const std::vector<NodeTunnel>& ts) {
  json a = json::array();
  for (const auto& t : ts)
    a.push_back({{"node_id", t.node_id}, {"ssh_host", t.ssh_host}, {"ssh_port", t.ssh_port}, {"tunnel", tunnel_json(t.tunnel)}});
  return a;
}
std::vector<NodeTunnel> node_tunnels_of(const json& a) {
  std::vector<NodeTunnel> out;
  for (const auto& t : a) out.push_back({t["node_id"], t["ssh_host"], t["ssh_port"].get<int>(), tunnel_of(t["tunnel"])});
  return out;
}
json service_node_json(const ServiceNode& n) {
  return {{"node_id", n.node_id},       {"ssh_host", n.ssh_host},
          {"ssh_port", n.ssh_port},     {"ssh_host_key", n.ssh_host_key},
          {"tunnel_address", n.tunnel_address}, {"nbd_host", n.nbd_host},
          {"nbd_port", n.nbd_port}};
}
ServiceNode service_node_of(const json& j) {
  return {j["node_id"],        j["ssh_host"], j["ssh_port"].get<int>(),  j["ssh_host_key"],
          j["tunnel_address"], j["nbd_host"], j["nbd_port"].get<int>()};
}
// Node ids are unique in a list.
void check_service_nodes(const json& j) {
  if (j["nodes"].empty()) throw FieldError("nodes", "must name at least one node (the VMA would hold no tunnel)");
  std::set<std::string> ids;
  for (size_t i = 0; i < j["nodes"].size(); ++i)
    if (!ids.insert(j["nodes"][i]["node_id"].get<std::string>()).second)
      throw FieldError(fmt::format("nodes[{}].node_id", i), "appears twice");
}

}  // namespace

json encode(const Health& m) {
  json j = {{"protocol_version", m.protocol_version},
            {"status", enum_name(m.status)},
            {"vma_instance", m.vma_instance},
            {"vcenter", {{"reachable", m.vcenter.reachable}, {"error", opt_text(m.vcenter.error)}}},
            {"tunnel", tunnel_json(m.tunnel)},
            {"tunnels", node_tunnels_json(m.tunnels)}};
  return checked(std::move(j), schemas::health());
}

json encode(const ServiceNode& m) { return checked(service_node_json(m), schemas::service_node()); }
void decode(const json& j, ServiceNode& out) {
  checked(j, schemas::service_node());
  out = service_node_of(j);
}

json encode(const ServiceNodes& m) {
  json a = json::array();
  for (const auto& n : m.nodes) a.push_back(service_node_json(n));
  json j = {{"nodes", a}};
  schema::validate(j, schemas::service_nodes());
  check_service_nodes(j);
  return j;
}
void decode(const json& j, ServiceNodes& out) {
  schema::validate(j, schemas::service_nodes());
  check_service_nodes(j);
  out.nodes.clear();
  for (const auto& n : j["nodes"]) out.nodes.push_back(service_node_of(n));
}

json encode(const ServiceNodesReply& m) {
  return checked({{"tunnels", node_tunnels_json(m.tunnels)}}, schemas::service_nodes_reply());
}
void decode(const json& j, ServiceNodesReply& out) {
  checked(j, schemas::service_nodes_reply());
  out.tunnels = node_tunnels_of(j["tunnels"]);
}

void decode(const json& j, Health& out) {
  checked(j, schemas::health());
  out.protocol_version = j["protocol_version"].get<int>();
  out.status = enum_of<HealthStatus>(j, "status");
  out.vma_instance = j["vma_instance"];
  out.vcenter = {j["vcenter"]["reachable"].get<bool>(), opt_of(j["vcenter"], "error")};
  out.tunnel = tunnel_of(j["tunnel"]);
  out.tunnels = node_tunnels_of(j["tunnels"]);
}

json encode(const EmptyRequest&) { return checked(json::object(), schemas::empty_request()); }

void decode(const json& j, EmptyRequest&) { checked(j, schemas::empty_request()); }

json encode(const ErrorReply& m) {
  json j = {{"error", printable_text(m.error)}};
  if (m.field) j["field"] = printable_text(m.field->substr(0, 255));
  return checked(std::move(j), schemas::error_reply());
}

void decode(const json& j, ErrorReply& out) {
  checked(j, schemas::error_reply());
  out.error = j["error"];
  out.field = j.contains("field") ? std::optional<std::string>(j["field"]) : std::nullopt;
}

}  // namespace mk::protocol
