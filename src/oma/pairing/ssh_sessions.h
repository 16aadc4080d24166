// Finding and ending the sshd session that holds a VMA's tunnel, for revocation.
//
// A VMA's reverse forward is a socket listening on 127.0.0.1:<its tunnel port>, opened
// by the sshd process that serves its connection. The session is found through that
// socket (the listening socket's inode in /proc/net/tcp, then the process holding it
// in /proc/PID/fd), and only a process whose executable is sshd is accepted, so the
// OMA never signals anything but the one session it means (never a process by name).
// Needs the OMA to run as root or as the tunnel's SSH user. Free functions; thread-safe.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace mk::oma {

// Where a node's sshd takes VMAs' reverse forwards unless told otherwise (--tunnel-address:
// another loopback address only where several OMA nodes share one machine).
inline const std::string kTunnelAddress = "127.0.0.1";

// PIDs of the processes holding a socket that listens on 127.0.0.1:port (any program).
std::vector<pid_t> loopback_listeners(int port, const std::string& address = kTunnelAddress);

// The sshd process holding the tunnel on 127.0.0.1:port, if any.
std::optional<pid_t> tunnel_session_pid(int port, const std::string& address = kTunnelAddress);

// Ends that session (SIGTERM, SIGKILL after `grace` if the port still listens). Returns
// the PID it ended, nullopt if no session held the port.
std::optional<pid_t> end_tunnel_session(int port, std::chrono::milliseconds grace = std::chrono::seconds(5),
                                        const std::string& address = kTunnelAddress);

// What became of a request to end the tunnel session on a port.
struct TunnelSessionEnd {
  enum class Outcome {
    Ended,      // the sshd session was signalled and the port no longer listens (or was killed)
    NoSession,  // nothing listened on 127.0.0.1:port
    Refused,    // something else holds the port (not an sshd session of the tunnel user)
    Failed,     // could not tell or could not signal (missing privileges, helper unreachable)
  };
  Outcome outcome = Outcome::Failed;
  std::optional<pid_t> pid;  // Ended: the sshd process
  std::string message;       // what happened, for the log and the API's answer
};
// "ended", "no-session", "refused", "failed"; parse_outcome is its inverse (throws
// mk::Error for anything else).
const char* outcome_name(TunnelSessionEnd::Outcome o);
TunnelSessionEnd::Outcome parse_outcome(const std::string& name);

// Ends the sshd session holding 127.0.0.1:port only if every process that holds that
// listening socket is sshd (or sshd-session) running as `tunnel_uid` (real, effective,
// saved and file-system uid), and the socket itself belongs to that uid; anything else
// is Refused and left alone. The process is signalled through a pidfd opened before it
// was checked, so a PID reused in between is never hit. SIGTERM, SIGKILL after `grace`
// if the port still listens.
TunnelSessionEnd end_user_tunnel_session(int port, uid_t tunnel_uid,
                                         std::chrono::milliseconds grace = std::chrono::seconds(5));

// Whether something accepts TCP connections on 127.0.0.1:port right now.
// `address`: another loopback address (a node's --tunnel-address).
bool loopback_port_answers(int port, std::chrono::milliseconds timeout = std::chrono::seconds(2),
                           const std::string& address = kTunnelAddress);

}  // namespace mk::oma
