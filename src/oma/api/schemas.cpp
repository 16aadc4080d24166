#include "oma/api/schemas.h"

#include "oma/api/checks.h"

namespace mk::oma::api {

using nlohmann::json;
using Type = Field::Type;

namespace {
constexpr const char* kUuidExample = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d";
}  // namespace

Field uuid_field(std::string name, std::string description) {
  return {.name = std::move(name), .description = std::move(description), .max_length = 36, .check = uuid_check,
          .example = kUuidExample, .pattern = kUuidPattern};
}

Field time_field(std::string name, std::string description) {
  return {.name = std::move(name), .type = Type::Integer,
          .description = std::move(description) + " (milliseconds since the Unix epoch)", .min = 0,
          .example = int64_t{1764673200000}};
}

Field text_field(std::string name, std::string description, std::string example) {
  return {.name = std::move(name), .description = std::move(description), .example = std::move(example)};
}

Field int_field(std::string name, std::string description, int64_t example, int64_t min) {
  return {.name = std::move(name), .type = Type::Integer, .description = std::move(description), .min = min,
          .example = example};
}

Field number_field(std::string name, std::string description, double example) {
  return {.name = std::move(name), .type = Type::Number, .description = std::move(description), .example = example};
}

Field bool_field(std::string name, std::string description, bool example) {
  return {.name = std::move(name), .type = Type::Boolean, .description = std::move(description), .example = example};
}

Field enum_field(std::string name, std::string description, const std::vector<std::string>& values) {
  return {.name = std::move(name), .description = std::move(description), .one_of = values};
}

Field object_field(std::string name, std::string description, const Schema* schema) {
  return {.name = std::move(name), .type = Type::Object, .description = std::move(description), .items = schema};
}

Field array_field(std::string name, std::string description, const Schema* items) {
  return {.name = std::move(name), .type = Type::Array, .description = std::move(description), .items = items};
}

Field nullable(Field f, json example) {
  f.nullable = true;
  if (!example.is_null()) f.example = std::move(example);
  return f;
}

Field optional(Field f) {
  f.required = false;
  return f;
}

std::vector<Field> join_fields(std::vector<Field> fields, const std::vector<Field>& more) {
  fields.insert(fields.end(), more.begin(), more.end());
  return fields;
}

Field uuid_path_param(std::string name, std::string what) {
  return uuid_field(std::move(name), what + " (its UUID)");
}

Field vm_id_path_param() { return uuid_path_param("vm_id", "the VM"); }

// --- Shared replies ------------------------------------------------------------------

namespace {

Field disk_key_field(std::string name) {
  return {.name = std::move(name), .description = "VMware device key of the disk", .max_length = 10,
          .check = disk_key_check, .example = "2000", .pattern = kDiskKeyPattern};
}

std::vector<Field> vm_fields() {
  return {
      uuid_field("vm_id", "VMware instance UUID of the VM"),
      text_field("name", "the VM's name in vCenter", "web01"),
      text_field("vcenter", "the vCenter that holds it", "vcenter.example.local"),
      text_field("datacenter", "its datacenter", "DC1"),
      int_field("cpus", "virtual CPUs", 2, 1),
      int_field("memory_mb", "memory in MiB", 4096, 1),
      text_field("guest_os", "guest OS as vCenter names it", "debian12_64Guest"),
      enum_field("power_state", "power state when discovered", kPowerStates),
      enum_field("status", "where the VM is in its migration", kVmStatuses),
      nullable(uuid_field("current_job_id", "the job running on it now")),
      time_field("created_at", "when it was added"),
      array_field("disks", "its disks, by unit", &kDisk),
  };
}

const Schema kLastPass{{
    uuid_field("job_id", "the pass's job"),
    enum_field("kind", "kind of pass", kPassKinds),
    enum_field("status", "how it ended", kJobStatuses),
    time_field("finished_at", "when it ended"),
    int_field("bytes", "bytes it copied", 1073741824),
    number_field("seconds", "how long it took", 42.5),
}};

const Field kBlocker{.description = "why the VM is not ready for cutover",
                     .example = "disk 2000 has no committed change ID"};

const Schema kFailover{{
    enum_field("kind", "what built it", kFailoverKinds),
    uuid_field("job_id", "the job that built it"),
    text_field("target_vm_id", "the VM's id in CloudStack", "8d5b7c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e"),
    time_field("created_at", "when it was built"),
}};

std::vector<Field> job_fields() {
  return {
      uuid_field("job_id", "the job"),
      uuid_field("vm_id", "the VM it works on"),
      enum_field("kind", "what the job does", kJobKinds),
      enum_field("status", "where the job is", kJobStatuses),
      text_field("phase", "what it is doing, for people", "copying: 1/2 disks completed"),
      int_field("bytes_done", "bytes copied so far", 536870912),
      int_field("bytes_total", "bytes this pass copies in all (the plan, not the capacity)", 1073741824),
      number_field("percent", "bytes_done of bytes_total, 0 to 100", 50),
      number_field("throughput_bps", "bytes per second now", 104857600),
      number_field("eta_seconds", "seconds left at this rate", 5),
      nullable(text_field("error", "why it failed", "VM 4210a4c2-... disk 2000 failed on the VMA: ...")),
      bool_field("cancel_requested", "an operator asked to cancel it", false),
      time_field("created_at", "when it started"),
      time_field("updated_at", "its last change"),
      nullable(time_field("finished_at", "when it ended")),
  };
}

const Schema kStep{{
    int_field("seq", "its order in the job", 1, 1),
    text_field("name", "what the step does", "power off the source"),
    enum_field("status", "how it went", kStepStatuses),
    nullable(text_field("message", "what it found or why it failed", "guest shut down in 12 s")),
    time_field("started_at", "when it started"),
    nullable(time_field("finished_at", "when it ended")),
}, "JobStep", "one step of a job"};

const Schema kEvent{{
    int_field("seq", "its order in the job", 1, 1),
    time_field("at", "when it happened"),
    enum_field("level", "how much it matters", kEventLevels),
    text_field("message", "what happened", "incremental pass started"),
}, "JobEvent", "one line of a job's log"};

}  // namespace

const Schema kError{{
    text_field("error", "what went wrong and what to do", "vm_id: must be a lowercase UUID in the path"),
    optional(text_field("field", "the input at fault (a JSON path, a parameter or \"body\")", "vm_id")),
}, "Error", "why a request failed"};

const Schema kDisk{{
    disk_key_field("key"),
    int_field("unit", "unit number (the N of the export's diskN)", 0),
    text_field("label", "vCenter's label", "Hard disk 1"),
    int_field("capacity_bytes", "capacity in bytes", 17179869184),
    nullable(text_field("volume_id", "its target volume", "vol-4210a4c2-disk0")),
    nullable(text_field("export", "its NBD export", "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk0")),
    nullable(text_field("change_id", "the committed CBT change ID (the next incremental starts from it)",
                        "52 3c 8a 1f 7d 2e 4b 6a-9c 0d 1e 2f 3a 4b 5c 6d/12")),
}, "Disk", "a VM's disk with its volume, export and committed change ID"};

const Schema kNic{{
    {.name = "key", .description = "VMware device key of the NIC", .example = "4000"},
    {.name = "mac", .description = "its MAC address", .example = "00:50:56:aa:bb:cc", .pattern = kMacPattern},
    text_field("network", "VMware network (port group)", "VM Network"),
}, "Nic", "a source VM's network card"};

namespace {

std::vector<Field> boot_check_summary_fields() {
  return {
      uuid_field("job_id", "the boot check's job"),
      enum_field("started_by", "who started it: an operator (api) or the OMA after an incremental pass "
                               "(setting boot_check.after_incremental)", kBootCheckStarters),
      bool_field("booted", "the guest booted: its journal on the overlays shows root mounted read-write and its "
                           "default target reached"),
      {.name = "reason", .description = "the evidence when booted, else why not", .max_length = 8192,
       .example = "41 journal entries since the boot started; ... Reached target multi-user.target",
       .multiline = true},
      number_field("conversion_seconds", "virt-v2v-in-place on the overlays (a cutover that converts takes about "
                                         "as long)", 87.5),
      number_field("boot_seconds", "from qemu's start to the boot seen (or to the limit)", 31.2),
      time_field("finished_at", "when it ended"),
  };
}

const Schema kBootCheckEvidence{{
    bool_field("journal_written", "the guest's journal has entries since the boot started (root or /var mounted "
                                  "read-write)"),
    bool_field("target_reached", "its init reached the default target (multi-user or graphical)"),
    {.name = "target", .description = "the journal line that shows it", .max_length = 1024,
     .example = "2026-12-05T01:20:31+0000 mk-lab-guest systemd[1]: Reached target multi-user.target"},
    {.name = "detail", .description = "what was read back", .max_length = 2048,
     .example = "41 journal entries since the boot started", .multiline = true},
}, "BootEvidence", "what the overlays showed after the boot"};

std::vector<Field> boot_check_fields() {
  return join_fields(boot_check_summary_fields(), std::vector<Field>{
      number_field("inspection_seconds", "virt-inspector on the replicas", 20.1),
      text_field("accel", "the accelerator qemu used: kvm, or tcg (software) where KVM cannot run guests", "tcg"),
      bool_field("converted", "virt-v2v-in-place converted the overlays"),
      bool_field("timed_out", "the boot limit was reached with the guest still running", false),
      nullable(object_field("evidence", "what the overlays showed (null: the check stopped before the boot)",
                            &kBootCheckEvidence)),
      {.name = "os", .description = "the inspected guest: distro and version (empty: none found)", .max_length = 255,
       .example = "debian 12.12"},
      {.name = "console_tail", .description = "the last 4 KiB of the serial console, as text", .max_length = 16384,
       .example = "Debian GNU/Linux 12 mk-lab-guest ttyS0\n\nmk-lab-guest login: ", .multiline = true},
      nullable(enum_field("screenshot_format", "the VGA console's picture taken before the guest was stopped "
                                               "(GET /api/v1/vms/{vm_id}/boot-check); null: none",
                          kScreenshotFormats)),
      time_field("started_at", "when it started"),
  });
}

}  // namespace

const Schema kBootCheckSummary{boot_check_summary_fields(), "BootCheckSummary", "a VM's last boot check, in short"};
const Schema kBootCheck{boot_check_fields(), "BootCheck",
                        "a VM's last boot check: overlays of its replicas converted and booted in a throwaway VM"};
const Schema kBootCheckDetail{
    join_fields(boot_check_fields(),
                std::vector<Field>{
                    uuid_field("vm_id", "the VM"),
                    nullable({.name = "screenshot_base64",
                              .description = "the VGA console's picture (screenshot_format), base64", .max_length = 8 << 20,
                              .example = "iVBORw0KGgoAAAANSUhEUgAAAtAAAAGQCAIAAAA..."}),
                }),
    "BootCheckDetail", "a VM's last boot check with the picture of its console"};

namespace {

Field guest_text(std::string name, std::string description, std::string example) {
  return {.name = std::move(name), .description = std::move(description), .max_length = 1024,
          .example = std::move(example)};
}

Field not_convertible_reason() {
  return {.name = "reason", .description = "why the guest cannot be converted (empty when it can)",
          .max_length = 8192, .example = "no operating system was found on the disks", .multiline = true};
}

std::vector<Field> inspection_fields() {
  return {
      uuid_field("job_id", "the job that inspected: an inspection, a boot check, a cutover or a test failover"),
      enum_field("started_by", "who inspected: an operator (api), the OMA after a pass (after_pass, when guests "
                               "are converted), or the inspection a boot check, cutover or test failover begins with",
                 kInspectionStarters),
      bool_field("os_found", "virt-inspector found an operating system on the disks"),
      guest_text("os_family", "the OS family (empty: none found)", "linux"),
      guest_text("distro", "the distribution", "debian"),
      guest_text("version", "major.minor", "12.12"),
      guest_text("product_name", "the OS's own name for itself", "Debian GNU/Linux 12 (bookworm)"),
      guest_text("osinfo", "libosinfo's short id (empty: unknown)", "debian12"),
      guest_text("root_device", "the root filesystem, as the inspection appliance names it", "/dev/sda1"),
      nullable(int_field("boot_disk", "the disk (index in unit order) holding the root filesystem and boot loader, "
                                      "which a cutover makes the root volume (null: none)", 0)),
      nullable(text_field("boot_disk_key", "that disk's key (null: none)", "2000")),
      nullable(enum_field("firmware", "what the disks show: uefi when an EFI system partition is mounted, else "
                                      "bios (null: no OS)", kDiskFirmwares)),
      nullable(enum_field("vsphere_firmware", "vSphere's firmware setting of the source VM, as its VMA reports it "
                                              "(null: not known)", kVsphereFirmwares)),
      bool_field("vsphere_secure_boot", "secure boot is on at the source", false),
      bool_field("convertible", "virt-v2v can convert the guest for KVM (virtio drivers, boot loader)"),
      not_convertible_reason(),
      number_field("seconds", "virt-inspector's run", 19.8),
      time_field("inspected_at", "when it ended"),
  };
}

}  // namespace

const Schema kGuestSummary{{
    guest_text("os", "distro and version as inspected (empty: no OS found)", "debian 12.12"),
    bool_field("convertible", "virt-v2v can convert the guest for KVM"),
    not_convertible_reason(),
    time_field("inspected_at", "when it was inspected"),
}, "GuestSummary", "a VM's guest as last inspected, in short (GET /api/v1/vms/{vm_id}/inspection has all of it)"};

const Schema kInspection{join_fields(inspection_fields(), std::vector<Field>{uuid_field("vm_id", "the VM")}),
                         "Inspection",
                         "a VM's last guest inspection: what virt-inspector found on its replicas, read-only"};

const Schema kVm{vm_fields(), "Vm", "a VM the OMA manages, with its disks"};

const Schema kVmSummary{
    join_fields(vm_fields(),
         std::vector<Field>{
             nullable(object_field("last_pass", "its newest ended replication pass", &kLastPass)),
             nullable(number_field("change_id_age_seconds",
                                   "age of the oldest disk's newest committed change ID (null: a disk has none)",
                                   3600)),
             bool_field("ready_for_cutover", "every disk has a committed change ID and nothing blocks"),
             {.name = "cutover_blockers", .type = Type::Array, .description = "why it is not ready",
              .element = &kBlocker},
             nullable(number_field("predicted_downtime_seconds",
                                   "cutover downtime predicted from the recent incremental passes (their durations "
                                   "less their snapshots' creation and removal: the final pass runs with the source "
                                   "powered off and takes no snapshot), plus the last boot check's conversion time "
                                   "when the cutover converts the guest", 95)),
             int_field("prediction_passes", "how many passes the prediction used", 3),
             nullable(number_field("predicted_conversion_seconds",
                                   "the guest conversion's part of the predicted downtime: the last boot check's "
                                   "conversion time (null: the cutover does not convert, or no boot check yet)",
                                   87.5)),
             nullable(object_field("boot_check", "its last boot check (null: none yet)", &kBootCheckSummary)),
             nullable(object_field("guest", "its guest as last inspected (null: not inspected yet)",
                                   &kGuestSummary)),
             nullable(object_field("schedule", "its repeating incremental pass", &kSchedule)),
         }),
    "VmSummary", "a VM in the list: its disks, last pass, cutover readiness and schedule"};

const Schema kVmDetail{
    join_fields(vm_fields(),
         std::vector<Field>{
             array_field("nics", "its network cards", &kNic),
             array_field("failovers", "what a cutover or a test failover built in CloudStack", &kFailover),
             nullable(object_field("boot_check", "its last boot check (null: none yet)", &kBootCheck)),
             nullable(object_field("guest", "its guest as last inspected (null: not inspected yet)",
                                   &kGuestSummary)),
         }),
    "VmDetail", "a VM with its disks, NICs and what cutover or test failover built"};

const Schema kJob{job_fields(), "Job", "a job (replication pass, cutover, test failover or its cleanup)"};

const Schema kPhaseTime{{
    enum_field("phase", "a part of the pass: snapshot, change_query, reader_start, planning, copying, flushing, "
                        "snapshot_removal (measured by the VMA) or reporting (the VMA's end of the pass to the "
                        "OMA's record)",
               enum_names<protocol::PassPhase>()),
    number_field("seconds", "how long it took", 0.42),
}, "JobDiskPhase", "how long one part of a disk's pass took"};

const Schema kJobDisk{{
    disk_key_field("disk_key"),
    int_field("unit", "unit number", 0),
    text_field("export", "the NBD export it is copied into",
               "migration-vm-4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d-disk0"),
    enum_field("status", "where the disk is", kJobDiskStatuses),
    enum_field("phase", "what the copy is doing", enum_names<protocol::DiskPhase>()),
    int_field("bytes_done", "bytes copied", 536870912),
    int_field("bytes_total", "bytes planned", 1073741824),
    number_field("throughput_bps", "bytes per second now", 104857600),
    number_field("eta_seconds", "seconds left at this rate", 5),
    nullable(text_field("change_id_base", "the change ID the pass started from (null: a full copy)",
                        "52 3c 8a 1f 7d 2e 4b 6a-9c 0d 1e 2f 3a 4b 5c 6d/11")),
    nullable(text_field("change_id", "the change ID this pass reached",
                        "52 3c 8a 1f 7d 2e 4b 6a-9c 0d 1e 2f 3a 4b 5c 6d/12")),
    bool_field("committed", "the change ID is committed (the pass is durable for this disk)", false),
    nullable(text_field("error", "why the disk failed", "nbd_pwrite: Input/output error")),
    array_field("phases", "where the pass's time went for this disk so far, in the order of a pass", &kPhaseTime),
}, "JobDisk", "one disk of a job"};

const Schema kJobProgress{join_fields(job_fields(), std::vector<Field>{array_field("disks", "its disks", &kJobDisk)}),
                          "JobProgress", "a job with its disks (also what the event stream sends)"};

const Schema kJobDetail{join_fields(job_fields(), std::vector<Field>{array_field("disks", "its disks", &kJobDisk),
                                                             array_field("steps", "its steps", &kStep),
                                                             array_field("events", "its log", &kEvent)}),
                        "JobDetail", "a job with its disks, steps and log"};

const Schema kJobStarted{{
    uuid_field("job_id", "the job that does it"),
    enum_field("status", "the job's status", kJobStatuses),
}, "JobStarted", "the job a cutover or test failover runs as"};

const Schema kSchedule{{
    uuid_field("vm_id", "the VM"),
    int_field("interval_minutes", "minutes between the starts of incremental passes", 60, 1),
    bool_field("enabled", "false: kept but paused"),
    nullable(time_field("next_run_at", "when the next pass starts (null: paused)")),
    nullable(time_field("last_run_at", "when it last fired")),
    nullable(uuid_field("last_job_id", "the last pass it started")),
    nullable(text_field("last_result", "what happened when it last fired", "started incremental pass 4210a4c2-...")),
    time_field("updated_at", "its last change"),
}, "Schedule", "a VM's repeating incremental pass"};

// The protocol's findings are optional on the wire (an older VMA sends none); the OMA
// always gives them.
std::vector<Field> discovered_vm_fields() {
  std::vector<Field> fields = protocol::schemas::discovered_vm().fields;
  for (auto& f : fields) {
    if (f.name == "findings") f.required = true;
  }
  return join_fields(std::move(fields),
                     {bool_field("managed", "the OMA manages it already (added)", false),
                      bool_field("blocked", "a pass would be refused: see findings", false)});
}

const Schema kDiscoveredVm{
    discovered_vm_fields(),
    "DiscoveredVmView", "a VM as the VMA found it in vCenter (the protocol's DiscoveredVm), whether the OMA "
    "manages it, and whether its preflight findings block a pass"};

std::vector<Field> vma_fields() {
  return {
      uuid_field("vma_id", "the VMA"),
      text_field("name", "its name (site)", "site-a"),
      text_field("vcenter", "the vCenter it serves", "vcenter.example.local"),
      enum_field("state", "pending (enrolled), approved (may hold its tunnel) or revoked", kVmaStates),
      int_field("tunnel_port", "the OMA's loopback port its tunnel forwards to its API", 9081, 1),
      text_field("ssh_public_key", "its SSH key", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO... vma@site-a"),
      time_field("created_at", "when it enrolled"),
      nullable(time_field("approved_at", "when an operator approved it")),
      nullable(time_field("revoked_at", "when it was revoked")),
  };
}

const Tag kSystemTag{"System", "Liveness, Prometheus metrics and this document"};

namespace {
const Field kAnyObject{.type = Type::Object, .description = "an OpenAPI object"};
}  // namespace

const Schema kOpenApiDocument{{
    {.name = "openapi", .description = "OpenAPI version", .one_of = {"3.0.3"}},
    {.name = "info", .type = Type::Object, .description = "title, version, description, contact"},
    {.name = "servers", .type = Type::Array, .description = "where the API is served", .element = &kAnyObject},
    {.name = "tags", .type = Type::Array, .description = "groups of operations", .element = &kAnyObject},
    {.name = "security", .type = Type::Array, .description = "the default security (bearer)", .element = &kAnyObject},
    {.name = "paths", .type = Type::Object, .description = "the operations by path and method"},
    {.name = "components", .type = Type::Object, .description = "named schemas and security schemes"},
}, "OpenApiDocument", "an OpenAPI 3.0 document"};

}  // namespace mk::oma::api
