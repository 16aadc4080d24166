// Whether a guest booted, read back from its disks after a throwaway boot: not from what
// it printed (a guest need not print anything on a serial console).
//
// For a Linux guest with systemd: its persistent journal, read by the guest's own
// journalctl inside the libguestfs appliance (read-only), must hold entries written since
// the boot started (so root — or /var — was mounted read-write and journald flushed to
// disk) and among them the default target being reached (multi-user or graphical).
// Free functions; thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "guest/overlay.h"

namespace mk::guest {

struct BootEvidence {
  bool journal_written = false;   // persistent journal entries since the boot started
  bool target_reached = false;    // "Reached target ... multi-user/graphical" among them
  std::string target;             // the line that showed it
  std::string detail;             // what was found or why nothing could be read
};

// Reads the journal of the guest on `disks` for entries since `boot_started` (Unix seconds).
// A raised `cancel` stops the read at once (the evidence then says it could not be read).
BootEvidence read_boot_evidence(const std::vector<DiskImage>& disks, long long boot_started,
                                std::chrono::seconds timeout, const std::atomic<bool>* cancel = nullptr);

// Decides from journalctl's short output (exposed for tests).
BootEvidence judge_journal(const std::string& journal_lines);

}  // namespace mk::guest
