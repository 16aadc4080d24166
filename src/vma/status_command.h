// `vma status --state-dir DIR`: asks the running VMA (its API on 127.0.0.1:<STATE/api.port>,
// signed with STATE/api.token like the OMA's calls) for its health and prints it for an
// operator: the VMA's instance, vCenter, and each SSH tunnel (one per OMA node of a
// service of nodes, or the one to a single OMA) with its state, since when and why it is
// not up. Exit status 0 when every tunnel is up and vCenter answers, 1 otherwise (or when
// the VMA does not answer), 2 bad arguments. No secret is printed.
#pragma once

namespace mk::vma {

int run_status(int argc, char** argv);

}  // namespace mk::vma
