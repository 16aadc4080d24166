// The copy's connections over libnbd: NbdChannel carries IoRequests on one
// NbdConnection with libnbd's asynchronous API; NbdNetwork opens channels to a source
// and a target endpoint, waits on both with poll(2), and keeps real time.
//
// A completion runs its request's on_done from inside libnbd (within NbdNetwork::poll,
// or within submit when the request cannot even be sent). A channel is driven from one
// thread; it owns its connection.
#pragma once

#include <memory>

#include "common/endpoint.h"
#include "engine/nbd_connection.h"
#include "engine/recovery.h"

namespace mk::engine {

class NbdChannel : public Channel {
 public:
  explicit NbdChannel(std::unique_ptr<NbdConnection> connection) : conn_(std::move(connection)) {}

  void submit(IoRequest& request) override;
  bool dead() const override;
  unsigned in_flight() const override;
  void shut_down() override;

  nbd_handle* handle() const { return conn_->handle(); }

 private:
  static int on_complete(void* user, int* error);

  std::unique_ptr<NbdConnection> conn_;
};

class NbdNetwork : public Network {
 public:
  // Keeps references to the endpoints, which must outlive it.
  NbdNetwork(const Endpoint& source, const Endpoint& target) : source_(source), target_(target) {}

  // A channel over a connection opened elsewhere (null stays null).
  static std::unique_ptr<Channel> adopt(std::unique_ptr<NbdConnection> connection);

  std::unique_ptr<Channel> open(Side side) override;
  // `source` and `target` must be channels this class made (NbdChannel).
  void poll(Channel* source, Channel* target, int timeout_ms) override;
  std::string describe(Side side) const override;
  Clock::time_point now() override { return Clock::now(); }
  void sleep_for(std::chrono::milliseconds delay) override;

 private:
  const Endpoint& source_;
  const Endpoint& target_;
};

}  // namespace mk::engine
