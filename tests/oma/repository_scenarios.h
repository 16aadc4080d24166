// The repositories' test scenarios, each run on a freshly migrated database of every
// engine: SQLite in repository_test.cpp, a real MariaDB server in mariadb_test.cpp.
// Each repository's scenarios are in its own file (vm_repository_test.cpp, ...); this
// header also holds the records they share.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "oma/db/database.h"
#include "oma/db/repositories.h"

namespace mk::oma::test {

using Scenario = std::function<void(db::Database&, Repositories&)>;
using Scenarios = std::vector<std::pair<std::string, Scenario>>;

// Every scenario of every repository, in a stable order (the test names).
const Scenarios& repository_scenarios();

// Each file's own.
Scenarios migration_scenarios();
Scenarios vm_repository_scenarios();
Scenarios job_repository_scenarios();
Scenarios storage_repository_scenarios();
Scenarios config_repository_scenarios();
Scenarios vma_repository_scenarios();
Scenarios schedule_repository_scenarios();
Scenarios node_repository_scenarios();
Scenarios placement_repository_scenarios();
Scenarios sealed_value_scenarios();
Scenarios boot_check_repository_scenarios();
Scenarios inspection_repository_scenarios();
Scenarios nbd_ca_repository_scenarios();

inline const std::string kVm1 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5d";
inline const std::string kVm2 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b4c5e";

inline VmRecord vm_record(const std::string& id) {
  VmRecord v;
  v.vm_id = id;
  v.name = "vm-" + id.substr(0, 4);
  v.vcenter = "vcenter.lab";
  v.datacenter = "DC1";
  v.cpus = 2;
  v.memory_mb = 4096;
  v.guest_os = "debian12_64Guest";
  v.power_state = protocol::PowerState::PoweredOn;
  return v;
}

// n disks: keys 2000.., units 0.., (i + 1) MiB each.
inline std::vector<DiskRecord> disk_records(int n) {
  std::vector<DiskRecord> out;
  for (int i = 0; i < n; ++i) {
    DiskRecord d;
    d.disk_key = std::to_string(2000 + i);
    d.unit = i;
    d.label = "Hard disk " + std::to_string(i + 1);
    d.capacity_bytes = (i + 1) * 1048576;
    out.push_back(d);
  }
  return out;
}

inline JobRecord job_record(const std::string& job_id, const std::string& vm_id) {
  JobRecord j;
  j.job_id = job_id;
  j.vm_id = vm_id;
  j.kind = JobKind::Full;
  j.status = JobStatus::Preparing;
  j.phase = "preparing";
  j.created_at = now_ms();
  return j;
}

inline std::vector<JobDiskRecord> job_disk_records(const std::string& job_id, int n) {
  std::vector<JobDiskRecord> out;
  for (int i = 0; i < n; ++i) {
    JobDiskRecord d;
    d.job_id = job_id;
    d.disk_key = std::to_string(2000 + i);
    d.unit = i;
    out.push_back(d);
  }
  return out;
}

}  // namespace mk::oma::test
