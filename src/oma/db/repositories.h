// Repositories: the OMA's state, one repository per concept, all over one Database.
//
//   vms        VMs, their disks and NICs, their VMA, their failovers   (vm_repository.h)
//   jobs       jobs, job disks, steps, events, committed change IDs    (job_repository.h)
//   storage    target volumes and NBD exports                          (storage_repository.h)
//   config     API tokens and settings                                 (config_repository.h)
//   vmas       paired VMAs and pairing codes                           (vma_repository.h)
//   schedules  repeating incremental passes                            (schedule_repository.h)
//   nodes      OMA nodes sharing the database, their leases           (node_repository.h)
//   placements which node holds each VM's volumes; the queue          (placement_repository.h)
//   boot_checks each VM's last boot check                             (boot_check_repository.h)
//   inspections each VM's last guest inspection                       (inspection_repository.h)
//
// The OMA (app.h) and the tests own one of these; every service is given only the
// repositories it uses. Transactions that span two groups (a job claiming its VM, a
// volume or export linked to its disk, change IDs committed to the disks) each live in
// one repository's method; the headers say which. Does not own the Database.
// Thread-safe (each repository is).
#pragma once

#include "oma/db/boot_check_repository.h"
#include "oma/db/config_repository.h"
#include "oma/db/database.h"
#include "oma/db/inspection_repository.h"
#include "oma/db/job_repository.h"
#include "oma/db/node_repository.h"
#include "oma/db/placement_repository.h"
#include "oma/db/schedule_repository.h"
#include "oma/db/storage_repository.h"
#include "oma/db/takeover_repository.h"
#include "oma/db/vm_repository.h"
#include "oma/db/vma_repository.h"

namespace mk::oma {

struct Repositories {
  explicit Repositories(db::Database& db)
      : database(db), vms(db), jobs(db), storage(db), config(db), vmas(db), schedules(db), nodes(db), placements(db), takeovers(db, jobs, placements),
        boot_checks(db), inspections(db) {}

  db::Database& database;
  VmRepository vms;
  JobRepository jobs;
  StorageRepository storage;
  ConfigRepository config;
  VmaRepository vmas;
  ScheduleRepository schedules;
  NodeRepository nodes;
  PlacementRepository placements;
  TakeoverRepository takeovers;
  BootCheckRepository boot_checks;
  InspectionRepository inspections;
};

}  // namespace mk::oma
