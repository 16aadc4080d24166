// The API's shared vocabulary for the OpenAPI document and the reply checks: the allowed
// values of each status, kind, role and state (one constant per concept), field makers
// for the common kinds of value (UUIDs, times, byte counts, ...), and the reply schemas
// of the objects several routes return (Vm, Disk, Job, JobDisk, Schedule, Error, ...).
// What the VMA reports (its health, discovered VMs, pairing and enrolment) is declared
// once by the protocol (src/protocol) and reused here. A route's own request and reply schemas live with the route.
//
// The schemas describe exactly what the views (views.h) build: the ApiServer checks
// every reply against them. Constants; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "oma/api/route.h"
#include "oma/db/config_repository.h"
#include "oma/db/job_repository.h"
#include "oma/db/node_repository.h"
#include "oma/db/takeover_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/db/vma_repository.h"
#include "oma/nodes/placement.h"
#include "protocol/enrolment.h"
#include "protocol/messages.h"

namespace mk::oma::api {

// Allowed values, one list per concept: the OMA's enums' names (db/*_repository.h), and
// the protocol's words. Inline: other files' schema constants use them during static
// initialisation (enum_names() reads function-local tables, safe at that time).
inline const std::vector<std::string> kJobKinds = enum_names<JobKind>();
inline const std::vector<std::string> kPassKinds = enum_names<protocol::PassKind>();
inline const std::vector<std::string> kJobStatuses = enum_names<JobStatus>();
inline const std::vector<std::string> kJobDiskStatuses = enum_names<protocol::DiskStatus>();
inline const std::vector<std::string> kStepStatuses = enum_names<StepStatus>();
inline const std::vector<std::string> kEventLevels = enum_names<EventLevel>();
inline const std::vector<std::string> kVmStatuses = enum_names<VmStatus>();  // see VmStatus
inline const std::vector<std::string> kPowerStates = enum_names<protocol::PowerState>();
inline const std::vector<std::string> kRoles = enum_names<TokenRole>();
inline const std::vector<std::string> kVmaStates = enum_names<VmaState>();
inline const std::vector<std::string> kTunnelPortStates = {"up", "down"};
inline const std::vector<std::string> kSessionOutcomes = {"ended", "no-session", "refused", "failed"};
inline const std::vector<std::string> kFailoverKinds = enum_names<FailoverKind>();
inline const std::vector<std::string> kNodeStates = enum_names<NodeState>();
inline const std::vector<std::string> kLeaseStates = enum_names<LeaseState>();
inline const std::vector<std::string> kPlacementLimits = enum_names<PlacementLimit>();
inline const std::vector<std::string> kTakeoverSteps = enum_names<TakeoverStep>();
inline const std::vector<std::string> kTakeoverKinds = enum_names<TakeoverKind>();
inline const std::vector<std::string> kBootCheckStarters = {"api", "after_incremental"};
inline const std::vector<std::string> kScreenshotFormats = {"png", "ppm"};
inline const std::vector<std::string> kInspectionStarters = {"api", "after_pass", "boot_check", "cutover",
                                                             "test_failover"};
inline const std::vector<std::string> kDiskFirmwares = {"bios", "uefi"};
inline const std::vector<std::string> kVsphereFirmwares = {"bios", "efi"};


// Field makers. `description` says what the value is; examples are realistic values.
Field uuid_field(std::string name, std::string description);  // lowercase UUID
Field time_field(std::string name, std::string description);  // ms since the Unix epoch
Field text_field(std::string name, std::string description, std::string example);
Field int_field(std::string name, std::string description, int64_t example, int64_t min = 0);
Field number_field(std::string name, std::string description, double example);
Field bool_field(std::string name, std::string description, bool example = true);
Field enum_field(std::string name, std::string description, const std::vector<std::string>& values);
Field object_field(std::string name, std::string description, const Schema* schema);
Field array_field(std::string name, std::string description, const Schema* items);
Field nullable(Field f, nlohmann::json example = nullptr);  // null is a value too
Field optional(Field f);                                      // may be absent
// `fields` and then `more` (a reply that extends another).
std::vector<Field> join_fields(std::vector<Field> fields, const std::vector<Field>& more);

// Path parameters.
Field uuid_path_param(std::string name, std::string what);  // {vm_id}: "the VM"
Field vm_id_path_param();                                    // {vm_id} of the VM routes

// The tag of /health, /metrics and the document itself.
extern const Tag kSystemTag;

// Replies shared by several routes.
extern const Schema kError;          // {"error", "field"?}
extern const Schema kDisk;           // a VM's disk (disk_json)
extern const Schema kNic;            // a VM's NIC
extern const Schema kVm;             // a VM with its disks (vm_json + disks)
extern const Schema kVmSummary;      // ... with pass statistics and schedule (the VM list)
extern const Schema kVmDetail;       // ... with NICs and what cutover / test failover built
extern const Schema kJob;            // job_json
extern const Schema kJobDisk;        // job_disk_json
extern const Schema kJobProgress;    // job_progress_json: a job with its disks
extern const Schema kJobDetail;      // ... with steps and events
extern const Schema kJobStarted;     // {"job_id", "status"} of cutover and test failover
extern const Schema kSchedule;       // schedule_json
extern const Schema kDiscoveredVm;   // discovered_vm_json: the protocol's DiscoveredVm + managed, blocked
extern const Schema kBootCheckSummary;  // boot_check_json(…, summary): a VM's last boot check in the list
extern const Schema kBootCheck;         // boot_check_json: with evidence and console tail (the VM's detail)
extern const Schema kBootCheckDetail;   // … with the screenshot (GET /api/v1/vms/{vm_id}/boot-check)
extern const Schema kGuestSummary;      // guest_summary_json: a VM's last inspection in short (list, detail)
extern const Schema kInspection;        // inspection_json (GET /api/v1/vms/{vm_id}/inspection)
std::vector<Field> vma_fields();     // vma_json
// A VMA's own health: the protocol's (protocol::schemas::health()).
extern const Schema kOpenApiDocument;  // GET /api/v1/openapi.json (its top level)

}  // namespace mk::oma::api
