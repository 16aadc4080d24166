// The OMA-managed authorized_keys file that lets each approved VMA hold its tunnel and
// nothing else, and the check of a VMA's SSH public key before it gets there.
//
// Each approved VMA gets one line:
//   restrict,port-forwarding,permitlisten="127.0.0.1:<tunnel port>",
//   permitopen="127.0.0.1:<nbd port>",command="/bin/false" ssh-ed25519 AAAA... vma-<id>
// restrict turns off every capability (pty, agent and X11 forwarding, user rc), then
// port-forwarding gives back forwarding, limited by permitlisten to the VMA's own reverse
// port and by permitopen to the NBD server (the NBD-over-SSH option); command= makes
// any session request run /bin/false instead of a shell. Checked against OpenSSH 9.2
// by tests/tunnel: another listen port, a shell and another local forward are refused.
//
// With several OMA nodes every node writes its own file from the shared database (its
// VMA sync round, vma_node_sync.h), so that every node's sshd takes every approved VMA
// and none takes a revoked one.
//
// The file is regenerated from the database (the source of truth) and replaced
// atomically (written to a temporary file, mode 0600, renamed into place). Free
// functions; thread-safe if callers serialise writes to one file (PairingService does).
#pragma once

#include <string>
#include <vector>

#include "oma/db/vma_repository.h"

namespace mk::oma {

// Throws UsageError (schema::FieldError "ssh_public_key") unless `key` is one
// "ssh-ed25519 <base64> [comment]" line; returns "ssh-ed25519 <base64>" (the comment is
// dropped: the OMA writes its own). The rule is the protocol's (protocol/enrolment.h).
std::string normalize_vma_public_key(const std::string& key);

// `tunnel_address`: where this node's sshd takes the reverse forward (permitlisten).
std::string authorized_key_line(const VmaRecord& vma, int nbd_port, const std::string& tunnel_address = "127.0.0.1");

// Writes every approved VMA's line to `path`. When `owner` names a user other than root
// and the OMA runs as root, the file is given to that user (sshd reads it as the user).
void write_authorized_keys(const std::string& path, const std::vector<VmaRecord>& vmas, int nbd_port,
                           const std::string& owner, const std::string& tunnel_address = "127.0.0.1");

}  // namespace mk::oma
