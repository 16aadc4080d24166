// The tunnel-session helper: how an OMA that runs as an unprivileged user (the Debian
// package's `oma`) ends a revoked VMA's SSH session, which runs as the tunnel user.
//
// The packaged OMA has no capabilities at all, and sshd's session for a tunnel belongs to
// the tunnel user (`migratekit`) and is not dumpable, so the OMA can neither find it
// (/proc/PID/fd) nor signal it. A root systemd socket unit
// (migratekit-oma-end-tunnel.socket, /run/migratekit-oma-end-tunnel.sock, mode 0660
// root:oma, Accept=yes) starts one hardened instance of `oma-end-tunnel-session` per
// connection, with the connection as its stdin and stdout and only CAP_KILL and
// CAP_SYS_PTRACE. The exchange is one line each way:
//
//   OMA -> helper   {"port": 9081}
//   helper -> OMA   {"port": 9081, "outcome": "ended"|"no-session"|"refused"|"failed",
//                    "pid": 1234 | null, "message": "..."}
//
// The helper checks who asks (SO_PEERCRED: root or its --client-user), then runs
// end_user_tunnel_session (ssh_sessions.h) for its --tunnel-user: it ends only an sshd
// session running as that user that holds the port, and refuses anything else. The
// answer comes back on the same connection, so the revocation's reply says at once
// whether the session ended; nothing is left behind for later (a request file could be
// acted on after a reboot, when another VMA may hold the port), and the helper never
// writes where the unprivileged user can. See docs/security.md, "Revocation".
//
// Free functions; thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "oma/pairing/ssh_sessions.h"

namespace mk::oma {

// The OMA's side: ends the tunnel session on 127.0.0.1:port. With `helper_socket` empty
// the OMA does it itself (end_tunnel_session: an OMA running as root); otherwise it asks
// the helper listening there and waits at most `timeout` for its answer. Never throws:
// an unreachable or silent helper is a Failed outcome whose message says what to check.
// `address`: the node's tunnel address; the helper knows 127.0.0.1 only (another address
// is for several nodes on one machine, whose OMA runs as root).
TunnelSessionEnd end_vma_tunnel_session(int port, const std::string& helper_socket,
                                        std::chrono::milliseconds timeout = std::chrono::seconds(15),
                                        const std::string& address = kTunnelAddress);

struct HelperOptions {
  uid_t tunnel_uid = 0;                  // only sshd sessions running as this uid are ended
  std::optional<uid_t> client_uid;       // who may ask besides root
  std::chrono::milliseconds grace{5000};  // SIGTERM, then SIGKILL
};

// The helper's side: reads one request from `in_fd`, which must be a Unix socket whose
// peer is root or options.client_uid, acts on it and writes the answer to `out_fd`.
// Returns the outcome it answered (a malformed request or a refused peer is Refused and
// answered too, when the socket allows).
TunnelSessionEnd serve_end_tunnel_request(int in_fd, int out_fd, const HelperOptions& options);

}  // namespace mk::oma
