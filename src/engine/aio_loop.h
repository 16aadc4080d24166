// Waits on several libnbd handles at once and lets each make progress.
//
// The copy pipeline drives a source and a target handle from one thread: this is the
// poll(2) step of that loop. Completion callbacks registered with the aio calls run
// inside poll_handles(), on the calling thread.
#pragma once

#include <libnbd.h>

#include <initializer_list>

namespace mk::engine {

// Polls the handles' sockets for up to `timeout_ms` and notifies libnbd of readiness.
// Handles that are dead or closed are skipped (callers check nbd_aio_is_dead).
void poll_handles(std::initializer_list<nbd_handle*> handles, int timeout_ms);

}  // namespace mk::engine
