// Connection recovery for the copy: a CopyTransport that survives failed requests and
// lost or silent connections, so that the pipeline above never sees them.
//
// Over a Network that opens connections (Channels) to the source and the target:
//  * A failed read, write or write-zeroes is submitted again after retry_delay, doubling
//    with each failure of that request (×64 at most); after max_retries retries the copy
//    fails with the endpoint, the request, its offset and the cause. Flush failures are
//    passed up (durability decides: a failed flush means rewriting, not flushing again).
//  * A dead connection is reopened (up to max_retries + 1 attempts with the same
//    backoff) before anything else is sent on it; requests submitted meanwhile wait for
//    it; one that cannot be reopened fails the copy with EndpointLost, and so does a
//    request that failed because its server went away. After the target is reopened,
//    on_target_replaced runs: writes the old connection completed but never flushed may
//    be lost.
//  * A connection with requests outstanding and no reply at all for request_timeout is
//    shut down: its requests fail (reported as timed out) and are retried on a new one.
// Time comes from the Network (tests use a fake clock). Driven from one thread.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/copy_transport.h"
#include "engine/endpoint_lost.h"

namespace mk::engine {

// One connection to the source or the target, as recovery uses it.
class Channel {
 public:
  virtual ~Channel() = default;
  // Starts `request` (reads on the source, the rest on the target). Its on_done runs
  // exactly once, possibly inside this call, with error set on failure.
  virtual void submit(IoRequest& request) = 0;
  // The connection is lost: every request on it has completed (failed).
  virtual bool dead() const = 0;
  // Requests sent and not yet answered.
  virtual unsigned in_flight() const = 0;
  // Drops the connection (a server that stopped answering): outstanding requests fail
  // with ENOTCONN or ESHUTDOWN, and the channel becomes dead.
  virtual void shut_down() = 0;
};

// Where recovery's connections come from, how it waits on them, and what time it is.
class Network {
 public:
  virtual ~Network() = default;
  // A new connection. Throws mk::Error when it cannot be opened.
  virtual std::unique_ptr<Channel> open(Side side) = 0;
  // Waits up to `timeout_ms` for either channel (each may be null) and completes the
  // requests that are answered (their on_done runs here).
  virtual void poll(Channel* source, Channel* target, int timeout_ms) = 0;
  // "source nbd://..." for messages.
  virtual std::string describe(Side side) const = 0;
  virtual Clock::time_point now() = 0;
  virtual void sleep_for(std::chrono::milliseconds delay) = 0;
};

struct RecoveryOptions {
  unsigned max_retries = 5;
  std::chrono::milliseconds retry_delay{200};  // doubles at each failure
  std::chrono::milliseconds request_timeout{120000};
};

// The delay after the `failures`-th failure (≥ 1): base × 2^(failures-1), at most base × 64.
std::chrono::milliseconds backoff(std::chrono::milliseconds base, unsigned failures);

class RecoveringTransport : public CopyTransport {
 public:
  // `network` must outlive this. `stopped` is asked between reconnection attempts: when
  // it returns true (copy failed elsewhere, cancelled) reconnecting gives up.
  RecoveringTransport(Network& network, const RecoveryOptions& options, std::function<bool()> stopped);
  ~RecoveringTransport() override;
  RecoveringTransport(const RecoveringTransport&) = delete;
  RecoveringTransport& operator=(const RecoveringTransport&) = delete;

  // Connections opened beforehand (for planning); either may be null.
  void adopt(std::unique_ptr<Channel> source, std::unique_ptr<Channel> target);
  void on_target_replaced(std::function<void()> callback) { on_target_replaced_ = std::move(callback); }
  // Opens the connections that are not open yet (wait() would, at its first call).
  void connect() { reopen_dead(); }

  void submit(IoRequest& request) override;
  void wait(int timeout_ms) override;

  unsigned retries() const { return retries_; }        // failed requests submitted again
  unsigned reconnects() const { return reconnects_; }  // connections reopened

 private:
  // A request on its way: the caller's request and the copy sent on a channel.
  struct Attempt {
    RecoveringTransport* transport = nullptr;
    IoRequest* outer = nullptr;
    IoRequest inner;
    Side side = Side::Source;
    unsigned failures = 0;
    Clock::time_point due;  // while waiting: when to send it again
  };

  static void on_inner_done(IoRequest& inner);
  std::unique_ptr<Channel>& channel(Side side) { return side == Side::Source ? source_ : target_; }
  void send(Attempt& a);
  void send_due();
  void reopen_dead();
  void reopen(Side side);
  void collect(int timeout_ms);
  void handle_finished();
  void failed(Attempt& a);
  void watch_silence(bool answered);
  void release(Attempt& a);
  int poll_timeout(int timeout_ms);

  Network& net_;
  const RecoveryOptions options_;
  std::function<bool()> stopped_;
  std::function<void()> on_target_replaced_;
  std::unique_ptr<Channel> source_, target_;
  std::vector<std::unique_ptr<Attempt>> attempts_;  // every Attempt ever made, reused
  std::vector<Attempt*> free_;
  std::vector<Attempt*> waiting_;   // to be sent again (or when their channel is back)
  std::vector<Attempt*> finished_;  // completed on a channel, not yet handled
  std::vector<Attempt*> batch_;     // being handled
  Clock::time_point last_reply_;
  bool timed_out_ = false;  // we shut a silent connection: its failures are time-outs
  unsigned retries_ = 0;
  unsigned reconnects_ = 0;
};

}  // namespace mk::engine
