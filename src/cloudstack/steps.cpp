#include "cloudstack/steps.h"

#include "common/error.h"
#include "common/log.h"

namespace mk::cloudstack {

const char* to_string(StepStatus status) {
  switch (status) {
    case StepStatus::Running: return "running";
    case StepStatus::Done: return "done";
    case StepStatus::Failed: return "failed";
    case StepStatus::Skipped: return "skipped";
  }
  return "unknown";
}

void StepLog::begin(const std::string& name) {
  steps_.push_back({name, StepStatus::Running, ""});
  log::info("step {}: running", name);
  if (listener_) listener_(steps_.back());
}

void StepLog::finish(StepStatus status, const std::string& detail) {
  if (steps_.empty() || steps_.back().status != StepStatus::Running) {
    throw Error("StepLog: no running step to finish (a bug in the job's code)");
  }
  steps_.back().status = status;
  steps_.back().detail = detail;
  log::info("step {}: {}{}{}", steps_.back().name, to_string(status), detail.empty() ? "" : ": ",
            detail);
  if (listener_) listener_(steps_.back());
}

void StepLog::done(const std::string& detail) { finish(StepStatus::Done, detail); }
void StepLog::failed(const std::string& detail) { finish(StepStatus::Failed, detail); }

void StepLog::skipped(const std::string& name, const std::string& why) {
  steps_.push_back({name, StepStatus::Skipped, why});
  if (listener_) listener_(steps_.back());
}

const Step* StepLog::find(const std::string& name) const {
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    if (it->name == name) return &*it;
  }
  return nullptr;
}

}  // namespace mk::cloudstack
