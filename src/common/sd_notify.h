// notify_service_manager: tells systemd (Type=notify units) about the service's state,
// e.g. "READY=1" once the service really answers, "STOPPING=1" when it begins to stop.
// The datagram goes to the socket named by $NOTIFY_SOCKET (a path, or "@name" for an
// abstract socket), as sd_notify(3) does; without that variable (not started by systemd)
// it does nothing. A failure to send is logged, never thrown: the service works on.
// Thread-safe.
#pragma once

#include <string_view>

namespace mk {

// Returns true when the state was sent, false when there is no $NOTIFY_SOCKET or the
// send failed (logged).
bool notify_service_manager(std::string_view state);

}  // namespace mk
