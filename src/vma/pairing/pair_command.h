// `vma pair --bundle FILE --state-dir DIR --name NAME --vcenter VCENTER`
//
// Imports an OMA pairing bundle into DIR (see paired_state.h), makes the VMA's SSH key
// pair, and enrols with the OMA (POST /api/v1/vmas/enroll, authenticated by the
// bundle's one-time pairing code). Prints the VMA's id, its tunnel port and what the
// OMA's operator must approve. The bundle can be deleted afterwards. Exit status 0
// enrolled, 1 failed (message on stderr names what and what to do), 2 bad arguments.
#pragma once

namespace mk::vma {

int run_pair(int argc, char** argv);

}  // namespace mk::vma
