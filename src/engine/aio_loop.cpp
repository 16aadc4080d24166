#include "engine/aio_loop.h"

#include <poll.h>

#include <cerrno>

namespace mk::engine {

void poll_handles(std::initializer_list<nbd_handle*> handles, int timeout_ms) {
  pollfd fds[8];
  nbd_handle* owners[8];
  int n = 0;
  for (nbd_handle* h : handles) {
    if (!h || n == 8) continue;
    int fd = nbd_aio_get_fd(h);
    if (fd < 0) continue;
    unsigned dir = nbd_aio_get_direction(h);
    short events = 0;
    if (dir & LIBNBD_AIO_DIRECTION_READ) events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) events |= POLLOUT;
    fds[n] = {fd, events, 0};
    owners[n++] = h;
  }
  if (n == 0) {
    poll(nullptr, 0, timeout_ms);
    return;
  }
  int r = poll(fds, n, timeout_ms);
  if (r <= 0) return;  // timeout or EINTR: the caller's loop comes back
  for (int i = 0; i < n; ++i) {
    short re = fds[i].revents;
    if (re & (POLLIN | POLLHUP | POLLERR)) nbd_aio_notify_read(owners[i]);
    else if (re & POLLOUT) nbd_aio_notify_write(owners[i]);
  }
}

}  // namespace mk::engine
