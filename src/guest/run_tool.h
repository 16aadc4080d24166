// Running one external guest tool (qemu-img, virt-inspector, virt-v2v-in-place, virt-log)
// to completion with a time limit, its standard output and error kept in a log file.
//
// No shell: an argument vector. The tool is stopped by PID (SIGTERM, then SIGKILL) when
// its time is up or when the caller's `cancel` flag is raised. Thread-safe (no shared state).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace mk::guest {

struct ToolOptions {
  std::map<std::string, std::string> env;
  std::chrono::seconds timeout{3600};
  std::string log_path;  // "" = a temporary file, removed afterwards
  const std::atomic<bool>* cancel = nullptr;
};

struct ToolResult {
  int status = -1;         // exit status; -1 when stopped (timeout or cancel)
  bool timed_out = false;
  bool cancelled = false;
  std::string output;      // stdout + stderr, at most the last 64 KiB
  double seconds = 0;
  // The last lines of output, for an error message.
  std::string output_tail(std::size_t max_bytes = 1500) const;
};

ToolResult run_tool(const std::vector<std::string>& argv, const ToolOptions& options = {});

}  // namespace mk::guest
