#include "vsphere/tasks.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "common/log.h"
#include "vsphere/inventory.h"

namespace mk::vsphere {

std::chrono::milliseconds next_poll_delay(std::chrono::milliseconds current, const TaskWait& wait) {
  auto next = current + current / 2;
  return std::max(wait.poll, std::min(next, std::max(wait.poll, wait.poll_max)));
}

TaskResult wait_for_task(Session& s, const Moref& task, const std::string& what, const TaskWait& wait) {
  auto deadline = std::chrono::steady_clock::now() + wait.timeout;
  auto delay = wait.poll;
  int last_progress = -1;
  for (;;) {
    std::vector<xml::Document> keep;
    ObjectProperties p = retrieve(s, task, {"info.state", "info.progress", "info.error", "info.result"}, keep);
    std::string state = p.get("info.state").text();
    if (xml::Node prog = p.get("info.progress"); prog && wait.on_progress) {
      int pct = static_cast<int>(xml::to_int(prog.text(), what + ": task progress"));
      if (pct != last_progress) wait.on_progress(pct);
      last_progress = pct;
    }
    if (state == "success") {
      TaskResult r;
      if (xml::Node res = p.get("info.result")) {
        r.result_type = res.xsi_type();
        r.result_text = res.text();
        if (!res.attr("type").empty()) r.result_ref = Moref::from(res);
        else if (r.result_type == "ManagedObjectReference") r.result_ref = Moref{"", r.result_text};
      }
      return r;
    }
    if (state == "error") {
      xml::Node err = p.get("info.error");
      std::string type = err.child("fault").xsi_type();
      std::string msg = err.text_of("localizedMessage");
      throw Error(fmt::format("vSphere {}: {} failed (task {}): {}{}{}", s.host(), what, task.value,
                              type.empty() ? "error" : type, msg.empty() ? "" : ": ", msg));
    }
    if (state != "queued" && state != "running") {
      throw Error(fmt::format("vSphere {}: {}: task {} is in an unknown state \"{}\"", s.host(), what, task.value,
                              state.substr(0, 64)));
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      throw Error(fmt::format("vSphere {}: {}: task {} did not finish within {} s; it may still be running in "
                              "vCenter (check its task list)",
                              s.host(), what, task.value, wait.timeout.count()));
    }
    auto remaining = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    std::this_thread::sleep_for(std::min(delay, std::max(remaining, std::chrono::milliseconds(1))));
    delay = next_poll_delay(delay, wait);
  }
}

TaskResult run_task(Session& s, const std::string& method, const std::string& body, const std::string& what,
                    const TaskWait& wait) {
  xml::Document doc;
  xml::Node rv = s.call(method, body, doc);
  if (!rv) throw Error(fmt::format("vSphere {}: {}: {} returned no task", s.host(), what, method));
  Moref task = Moref::from(rv);
  if (task.type.empty()) task.type = "Task";
  log::debug("vSphere {}: {}: task {}", s.host(), what, task.value);
  return wait_for_task(s, task, what, wait);
}

}  // namespace mk::vsphere
