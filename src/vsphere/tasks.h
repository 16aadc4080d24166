// Waiting for vSphere tasks (the *_Task methods) to finish.
//
// A task is polled through the property collector (info.state, info.progress,
// info.error, info.result) until it succeeds or fails, at first every `poll`, then less
// and less often (half as long again each time, up to `poll_max`): a snapshot removal
// that consolidates for an hour must not cost vCenter 14,000 property reads, and one that
// ends in 300 ms must not keep a pass waiting 0.6 s (the first delay is short, and the
// back-off keeps the time lost at most half the task's own); a failure throws mk::Error with
// the task's own fault type and localized message, the operation and the object.
// Stateless; thread-safe as the Session is.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "vsphere/session.h"

namespace mk::vsphere {

struct TaskWait {
  std::chrono::seconds timeout{3600};
  std::chrono::milliseconds poll{25};        // the first delay
  std::chrono::milliseconds poll_max{5000};  // the longest delay between two polls
  std::function<void(int percent)> on_progress;  // called when info.progress changes
};

// The delay after `current`: 1.5 x, at most wait.poll_max (and never below wait.poll).
std::chrono::milliseconds next_poll_delay(std::chrono::milliseconds current, const TaskWait& wait);

struct TaskResult {
  std::string result_type;   // xsi:type of info.result ("ManagedObjectReference", ...)
  std::string result_text;   // its text (a moref's value)
  Moref result_ref;          // info.result as a moref, when it is one
};

// Waits for `task`; `what` describes the operation ("CreateSnapshot on VM web01 (vm-12)").
TaskResult wait_for_task(Session& s, const Moref& task, const std::string& what, const TaskWait& wait = {});

// Calls a *_Task method and waits for it.
TaskResult run_task(Session& s, const std::string& method, const std::string& body, const std::string& what,
                    const TaskWait& wait = {});

}  // namespace mk::vsphere
