#include "engine/nbd_channel.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <thread>

#include "engine/aio_loop.h"

namespace mk::engine {
namespace {

constexpr int kPending = -1;  // IoRequest::error while libnbd holds the request

}  // namespace

void NbdChannel::submit(IoRequest& r) {
  nbd_handle* h = conn_->handle();
  nbd_completion_callback cb{.callback = on_complete, .user_data = &r, .free = nullptr};
  r.error = kPending;
  int64_t rc = -1;
  switch (r.kind) {
    case IoKind::Read: rc = nbd_aio_pread(h, r.buf, r.length, r.offset, cb, 0); break;
    case IoKind::Write: rc = nbd_aio_pwrite(h, r.buf, r.length, r.offset, cb, 0); break;
    case IoKind::Zero: rc = nbd_aio_zero(h, r.length, r.offset, cb, 0); break;
    case IoKind::Flush: rc = nbd_aio_flush(h, cb, 0); break;
  }
  // Not sent at all (a dead handle): complete it here, unless libnbd already did.
  if (rc == -1 && r.error == kPending) {
    r.error = nbd_get_errno() ? nbd_get_errno() : EIO;
    r.on_done(r);
  }
}

int NbdChannel::on_complete(void* user, int* error) {
  IoRequest& r = *static_cast<IoRequest*>(user);
  r.error = *error;
  r.on_done(r);
  return 1;  // retire the command
}

bool NbdChannel::dead() const { return nbd_aio_is_dead(handle()) || nbd_aio_is_closed(handle()); }

unsigned NbdChannel::in_flight() const { return static_cast<unsigned>(std::max(0, nbd_aio_in_flight(handle()))); }

void NbdChannel::shut_down() {
  // libnbd sees the socket fail at its next read and fails every request on it.
  int fd = nbd_aio_get_fd(handle());
  if (fd >= 0) ::shutdown(fd, SHUT_RDWR);
}

std::unique_ptr<Channel> NbdNetwork::adopt(std::unique_ptr<NbdConnection> connection) {
  if (!connection) return nullptr;
  return std::make_unique<NbdChannel>(std::move(connection));
}

std::unique_ptr<Channel> NbdNetwork::open(Side side) {
  return std::make_unique<NbdChannel>(NbdConnection::open(side == Side::Source ? source_ : target_));
}

void NbdNetwork::poll(Channel* source, Channel* target, int timeout_ms) {
  auto handle = [](Channel* c) { return c ? static_cast<NbdChannel*>(c)->handle() : nullptr; };
  poll_handles({handle(source), handle(target)}, timeout_ms);
}

std::string NbdNetwork::describe(Side side) const {
  return (side == Side::Source ? source_ : target_).describe();
}

void NbdNetwork::sleep_for(std::chrono::milliseconds delay) { std::this_thread::sleep_for(delay); }

}  // namespace mk::engine
