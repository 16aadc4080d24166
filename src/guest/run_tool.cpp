#include "guest/run_tool.h"

#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <iterator>

#include "common/subprocess.h"
#include "guest/scratch_dir.h"

namespace mk::guest {
namespace {

std::string read_tail(const std::string& path, std::size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > max_bytes) text.erase(0, text.size() - max_bytes);
  return text;
}

}  // namespace

std::string ToolResult::output_tail(std::size_t max_bytes) const {
  std::string tail = output.size() > max_bytes ? output.substr(output.size() - max_bytes) : output;
  while (!tail.empty() && (tail.back() == '\n' || tail.back() == ' ')) tail.pop_back();
  if (timed_out) tail += " (stopped: time limit reached)";
  if (cancelled) tail += " (stopped: cancelled)";
  return tail.empty() ? "(no output)" : tail;
}

ToolResult run_tool(const std::vector<std::string>& argv, const ToolOptions& options) {
  std::unique_ptr<ScratchDir> scratch;
  std::string log = options.log_path;
  if (log.empty()) {
    scratch = std::make_unique<ScratchDir>("tool");
    log = scratch->path() + "/output.log";
  }
  SpawnOptions spawn;
  spawn.env = options.env;
  spawn.stdout_path = log;
  spawn.stderr_path = log;
  // A process group of its own, so that helpers the tool starts (virt-v2v's qemu-nbd -t)
  // go with it: a conversion cancelled midway left them running, orphaned, in the group.
  spawn.own_session = true;
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + options.timeout;
  Subprocess child = Subprocess::spawn(argv, spawn);
  ToolResult result;
  for (;;) {
    if (auto status = child.wait_for(std::chrono::milliseconds(250))) {
      result.status = *status;
      break;
    }
    if (options.cancel && options.cancel->load()) result.cancelled = true;
    if (std::chrono::steady_clock::now() >= deadline) result.timed_out = true;
    if (result.cancelled || result.timed_out) {
      ::kill(-child.pid(), SIGTERM);  // the tool and its helpers, as they would stop on ^C
      child.stop();
      result.status = -1;
      break;
    }
  }
  // Whatever of the group outlived the tool is a leftover of it (the group's id stays
  // taken while a member lives, so this reaches no one else).
  ::kill(-child.pid(), SIGKILL);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  result.output = read_tail(log, 64 * 1024);
  return result;
}

}  // namespace mk::guest
