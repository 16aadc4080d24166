// StepLog: the steps of a CloudStack job (cutover, test failover, cleanup) as they run:
// name, status and a detail (CloudStack's error text on failure).
//
// The OMA persists steps through the optional callback, called after every change with
// the changed step; the log itself keeps them all in memory in order. Not thread-safe:
// one job, one thread.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace mk::cloudstack {

enum class StepStatus { Running, Done, Failed, Skipped };

const char* to_string(StepStatus status);

struct Step {
  std::string name;
  StepStatus status = StepStatus::Running;
  std::string detail;
};

class StepLog {
 public:
  using Listener = std::function<void(const Step&)>;
  explicit StepLog(Listener listener = {}) : listener_(std::move(listener)) {}

  void begin(const std::string& name);  // a new step, Running
  void done(const std::string& detail = "");
  void failed(const std::string& detail);
  void skipped(const std::string& name, const std::string& why);

  const std::vector<Step>& steps() const { return steps_; }
  // The step with that name (the last one if repeated), or nullptr.
  const Step* find(const std::string& name) const;

 private:
  void finish(StepStatus status, const std::string& detail);
  std::vector<Step> steps_;
  Listener listener_;
};

}  // namespace mk::cloudstack
