// JobObserver: what the JobManager tells a listener of its jobs' changes as they happen,
// so that the listener (the GUI's event stream, oma/gui/event_hub.h) shows them at once
// instead of finding them in the database later. The listener depends on this interface
// only, never on the JobManager.
//
// Called on the job's runner thread (and on API threads: start, cancel), one call at a
// time (the JobManager serialises them); an implementation must be quick, must not call
// back into the JobManager, and must not throw.
#pragma once

#include <string>
#include <vector>

#include "oma/db/job_repository.h"

namespace mk::oma {

class JobObserver {
 public:
  virtual ~JobObserver() = default;
  // The job and its disks as they are now. `live`: the JobManager follows the job's
  // copy and these values may be newer than the database's (it records byte progress
  // at most every JobOptions::progress_record_interval): until a call with live false,
  // this job's state comes from these calls, not from the database. Its steps and
  // events are in the database already.
  virtual void job_changed(const JobRecord& job, const std::vector<JobDiskRecord>& disks, bool live) = 0;
  // False while nobody would see a change (no subscriber): the JobManager then does not
  // read the job to tell it.
  virtual bool wants_changes() = 0;
};

}  // namespace mk::oma
