#include "guest/boot_evidence.h"

#include <cctype>
#include <regex>
#include <sstream>

#include "guest/accel.h"
#include "guest/run_tool.h"

namespace mk::guest {

BootEvidence judge_journal(const std::string& lines) {
  BootEvidence e;
  static const std::regex reached(R"(Reached target (multi-user|graphical)\.target|Reached target (Multi-User System|Graphical Interface))");
  std::istringstream in(lines);
  std::string line;
  int entries = 0;
  while (std::getline(in, line)) {
    // Only entries count (short-iso lines start with the date), not journalctl's notes.
    if (line.size() < 11 || !std::isdigit(static_cast<unsigned char>(line[0])) || line[4] != '-' ||
        line[10] != 'T') {
      continue;
    }
    ++entries;
    if (!e.target_reached && std::regex_search(line, reached)) {
      e.target_reached = true;
      e.target = line;
    }
  }
  e.journal_written = entries > 0;
  e.detail = std::to_string(entries) + " journal entries since the boot started" +
             (e.target_reached ? "; " + e.target : "; default target not reached");
  return e;
}

BootEvidence read_boot_evidence(const std::vector<DiskImage>& disks, long long boot_started,
                                std::chrono::seconds timeout, const std::atomic<bool>* cancel) {
  std::vector<std::string> argv{"guestfish", "--ro", "-i"};
  for (const DiskImage& d : disks) {
    argv.insert(argv.end(), {"--format=" + d.format, "-a", d.path});
  }
  // The guest's own journalctl understands its journal's format; the journal lives on
  // /var, which inspection (-i) mounted where the guest's fstab says.
  const std::string script =
      "if ! command -v journalctl >/dev/null; then echo MK-NO-JOURNALCTL; exit 0; fi; "
      "J=\"journalctl -D /var/log/journal --since @" + std::to_string(boot_started) +
      " --no-pager -q -o short-iso\"; $J 2>&1 | head -n 20; $J 2>/dev/null | grep 'Reached target' | tail -n 100";
  argv.insert(argv.end(), {"sh", script});
  ToolOptions tool;
  tool.env = libguestfs_env(detect_accel());
  tool.timeout = timeout;
  tool.cancel = cancel;
  const ToolResult r = run_tool(argv, tool);
  if (r.status != 0) {
    BootEvidence e;
    e.detail = "could not read the guest's journal: " + r.output_tail(600);
    return e;
  }
  if (r.output.find("MK-NO-JOURNALCTL") != std::string::npos) {
    BootEvidence e;
    e.detail = "the guest has no journalctl (not a systemd guest): no evidence on its disks";
    return e;
  }
  return judge_journal(r.output);
}

}  // namespace mk::guest
