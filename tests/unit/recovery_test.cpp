// Unit tests for src/engine/recovery.h: retries with doubling delays, reopened
// connections, dropped silent connections, and the messages when recovery gives up.
// A fake network stands in for libnbd: channels that answer (or fail, die, stay
// silent) when polled, and a fake clock that only moves when the code waits or sleeps.
#include "engine/recovery.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <map>
#include <set>

#include "common/error.h"

namespace mk::engine {
namespace {

using namespace std::chrono_literals;
using std::chrono::milliseconds;

class FakeNetwork;

struct Sent {
  int channel;
  IoKind kind;
  uint64_t offset;
  milliseconds at;  // fake time since the start
};

class FakeChannel : public Channel {
 public:
  FakeChannel(FakeNetwork& net, Side side, int id) : side(side), id(id), net_(net) {}
  ~FakeChannel() override;

  void submit(IoRequest& r) override;
  bool dead() const override { return dead_; }
  unsigned in_flight() const override { return static_cast<unsigned>(in_flight_.size()); }
  void shut_down() override;

  // The connection is lost: like libnbd, every request on it fails at once.
  void die(int error) {
    dead_ = true;
    std::vector<IoRequest*> lost;
    lost.swap(in_flight_);
    for (IoRequest* r : lost) {
      r->error = error;
      r->on_done(*r);
    }
  }
  bool answer();  // answers every request in flight; false if there was none

  const Side side;
  const int id;

 private:
  FakeNetwork& net_;
  std::vector<IoRequest*> in_flight_;
  bool dead_ = false;
};

class FakeNetwork : public Network {
 public:
  std::unique_ptr<Channel> open(Side side) override {
    ++opens[side];
    if (refusals[side] > 0) {
      --refusals[side];
      throw Error("connection refused");
    }
    auto ch = std::make_unique<FakeChannel>(*this, side, ++last_id);
    current[side] = ch.get();
    return ch;
  }

  void poll(Channel* source, Channel* target, int timeout_ms) override {
    polls.push_back(timeout_ms);
    bool answered = false;
    for (Channel* c : {source, target}) {
      auto* fc = static_cast<FakeChannel*>(c);
      if (fc && !silent.count(fc->id)) answered = fc->answer() || answered;
    }
    if (!answered) clock += milliseconds(timeout_ms);  // nothing came: the whole timeout passed
  }

  std::string describe(Side side) const override {
    return side == Side::Source ? "source nbd://src/disk" : "target nbd://dst/disk";
  }
  Clock::time_point now() override { return Clock::time_point() + clock; }
  void sleep_for(milliseconds delay) override {
    sleeps.push_back(delay);
    clock += delay;
  }

  milliseconds clock{0};
  std::map<Side, int> opens, refusals;
  std::map<Side, FakeChannel*> current;
  std::set<int> silent;  // channel ids that never answer
  std::function<int(const IoRequest&)> fail;  // errno for an answered request, or 0
  std::vector<Sent> sent;
  std::vector<int> polls;
  std::vector<milliseconds> sleeps;
  int shutdowns = 0;
  int last_id = 0;
};

FakeChannel::~FakeChannel() {
  if (net_.current[side] == this) net_.current.erase(side);
}

void FakeChannel::submit(IoRequest& r) {
  EXPECT_EQ(side, r.kind == IoKind::Read ? Side::Source : Side::Target) << "request on the wrong side";
  net_.sent.push_back({id, r.kind, r.offset, net_.clock});
  if (dead_) {  // libnbd refuses a request on a dead handle at once
    r.error = ENOTCONN;
    r.on_done(r);
    return;
  }
  in_flight_.push_back(&r);
}

void FakeChannel::shut_down() {
  ++net_.shutdowns;
  die(ESHUTDOWN);
}

bool FakeChannel::answer() {
  if (in_flight_.empty()) return false;
  std::vector<IoRequest*> done;
  done.swap(in_flight_);
  for (IoRequest* r : done) {
    r->error = net_.fail ? net_.fail(*r) : 0;
    r->on_done(*r);
  }
  return true;
}

// A request of the copy, as the pipeline would submit it, counting its completions.
struct Request {
  explicit Request(IoKind kind, uint64_t offset = 0, uint64_t length = 4096) {
    io.kind = kind;
    io.buf = kind == IoKind::Read || kind == IoKind::Write ? buf : nullptr;
    io.offset = offset;
    io.length = length;
    io.owner = this;
    io.on_done = [](IoRequest& r) {
      Request& self = *static_cast<Request*>(r.owner);
      ++self.done;
      self.error = r.error;
    };
  }
  IoRequest io;
  char buf[4096];
  int done = 0;
  int error = -1;
};

RecoveryOptions recovery_options(unsigned max_retries = 5, milliseconds timeout = 120s) {
  RecoveryOptions o;
  o.max_retries = max_retries;
  o.retry_delay = 200ms;
  o.request_timeout = timeout;
  return o;
}

// Waits (in fake time) until every request is done; at most `rounds` waits.
void wait_until_done(RecoveringTransport& t, std::initializer_list<Request*> requests, int rounds = 200) {
  auto all_done = [&] {
    for (Request* r : requests) {
      if (r->done == 0) return false;
    }
    return true;
  };
  while (!all_done() && rounds-- > 0) t.wait(500);
  for (Request* r : requests) EXPECT_EQ(r->done, 1) << "offset " << r->io.offset;
}

std::vector<milliseconds> send_times(const FakeNetwork& net, IoKind kind) {
  std::vector<milliseconds> out;
  for (const Sent& s : net.sent) {
    if (s.kind == kind) out.push_back(s.at);
  }
  return out;
}

TEST(UnitRecovery, BackoffDoublesUpToSixtyFourTimes) {
  EXPECT_EQ(backoff(200ms, 1), 200ms);
  EXPECT_EQ(backoff(200ms, 2), 400ms);
  EXPECT_EQ(backoff(200ms, 3), 800ms);
  EXPECT_EQ(backoff(200ms, 7), 12800ms);
  EXPECT_EQ(backoff(200ms, 20), 12800ms);
}

TEST(UnitRecovery, AnsweredRequestsPassThroughOnce) {
  FakeNetwork net;
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  Request read(IoKind::Read, 0), write(IoKind::Write, 4096), zero(IoKind::Zero, 8192), flush(IoKind::Flush);
  for (Request* r : {&read, &write, &zero, &flush}) t.submit(r->io);
  wait_until_done(t, {&read, &write, &zero, &flush});
  for (Request* r : {&read, &write, &zero, &flush}) EXPECT_EQ(r->error, 0);
  EXPECT_EQ(net.opens[Side::Source], 1);
  EXPECT_EQ(net.opens[Side::Target], 1);
  EXPECT_EQ(net.sent.size(), 4u);
  EXPECT_EQ(t.retries(), 0u);
  EXPECT_EQ(t.reconnects(), 0u);
}

// A read fails three times: it is sent again 200, 400 and 800 ms after each failure
// (fake time; the wait never sleeps past the next retry), then succeeds.
TEST(UnitRecovery, FailedRequestIsSentAgainWithDoublingDelay) {
  FakeNetwork net;
  int failures = 0;
  net.fail = [&](const IoRequest& r) { return r.kind == IoKind::Read && failures++ < 3 ? EIO : 0; };
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  Request read(IoKind::Read, 1 << 20);
  t.submit(read.io);
  wait_until_done(t, {&read});
  EXPECT_EQ(read.error, 0);
  EXPECT_EQ(send_times(net, IoKind::Read), (std::vector<milliseconds>{0ms, 200ms, 600ms, 1400ms}));
  EXPECT_EQ(t.retries(), 3u);
  EXPECT_EQ(t.reconnects(), 0u);
  for (int timeout : net.polls) EXPECT_LE(timeout, 500);
}

TEST(UnitRecovery, GivesUpAfterMaxRetriesNamingEndpointRequestOffsetAndCause) {
  FakeNetwork net;
  net.fail = [](const IoRequest& r) { return r.kind == IoKind::Write ? ENOSPC : 0; };
  RecoveringTransport t(net, recovery_options(2), [] { return false; });
  Request write(IoKind::Write, 3 << 20, 512);
  t.submit(write.io);
  try {
    for (int i = 0; i < 100; ++i) t.wait(500);
    FAIL() << "recovery never gave up";
  } catch (const EndpointLost& e) {
    FAIL() << "a server that refused a write is not lost: " << e.what();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "target nbd://dst/disk: write of 512 bytes at offset 3145728 failed after 3 attempts: "
                 "No space left on device");
  }
  EXPECT_EQ(write.done, 0) << "the pipeline must never see a request recovery gave up on";
  EXPECT_EQ(send_times(net, IoKind::Write).size(), 3u);
}

TEST(UnitRecovery, WriteZeroesFailureIsNamedAsSuch) {
  FakeNetwork net;
  net.fail = [](const IoRequest&) { return EIO; };
  RecoveringTransport t(net, recovery_options(0), [] { return false; });
  Request zero(IoKind::Zero, 0, 1 << 30);
  t.submit(zero.io);
  try {
    t.wait(500);
    FAIL() << "a failed write-zeroes with no retries left went unnoticed";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "target nbd://dst/disk: write-zeroes of 1073741824 bytes at offset 0 failed after 1 attempts: "
                 "Input/output error");
  }
}

// A failed flush is not flushed again (durability rewrites instead): it goes up at once.
TEST(UnitRecovery, FlushFailureIsPassedUp) {
  FakeNetwork net;
  net.fail = [](const IoRequest& r) { return r.kind == IoKind::Flush ? EIO : 0; };
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  Request flush(IoKind::Flush);
  t.submit(flush.io);
  wait_until_done(t, {&flush});
  EXPECT_EQ(flush.error, EIO);
  EXPECT_EQ(send_times(net, IoKind::Flush).size(), 1u);
  EXPECT_EQ(t.retries(), 0u);
}

// The target dies with writes in flight: it is reopened, the writes are sent again on
// the new connection, and the owner of unflushed writes hears of the replacement.
TEST(UnitRecovery, LostTargetIsReopenedAndItsRequestsSentAgain) {
  FakeNetwork net;
  net.silent = {2};  // the first target holds its requests until it dies
  int replaced = 0;
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  t.on_target_replaced([&] { ++replaced; });
  Request a(IoKind::Write, 0), b(IoKind::Write, 4096), read(IoKind::Read, 0);
  for (Request* r : {&a, &b, &read}) t.submit(r->io);
  t.wait(500);
  EXPECT_EQ(read.done, 1);
  ASSERT_EQ(net.current[Side::Target]->id, 2);
  net.current[Side::Target]->die(ENOTCONN);
  wait_until_done(t, {&a, &b});
  EXPECT_EQ(a.error, 0);
  EXPECT_EQ(b.error, 0);
  EXPECT_EQ(net.opens[Side::Target], 2);
  EXPECT_EQ(net.opens[Side::Source], 1);
  EXPECT_EQ(replaced, 1);
  EXPECT_EQ(t.reconnects(), 1u);
  EXPECT_EQ(t.retries(), 2u);
  int on_new = 0;
  for (const Sent& s : net.sent) on_new += s.kind == IoKind::Write && s.channel == 3;
  EXPECT_EQ(on_new, 2);
}

TEST(UnitRecovery, LostSourceIsReopenedWithoutTouchingTheTarget) {
  FakeNetwork net;
  net.silent = {1};
  int replaced = 0;
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  t.on_target_replaced([&] { ++replaced; });
  Request read(IoKind::Read, 0);
  t.submit(read.io);
  t.wait(500);
  net.current[Side::Source]->die(ECONNRESET);
  wait_until_done(t, {&read});
  EXPECT_EQ(read.error, 0);
  EXPECT_EQ(net.opens[Side::Source], 2);
  EXPECT_EQ(net.opens[Side::Target], 1);
  EXPECT_EQ(replaced, 0);
}

// A request submitted while its connection is down waits for the new connection; it
// is not sent on the dead one and does not count as a retry.
TEST(UnitRecovery, RequestsSubmittedWhileDownWaitForTheNewConnection) {
  FakeNetwork net;
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  t.connect();
  net.current[Side::Target]->die(ENOTCONN);
  Request write(IoKind::Write, 0);
  t.submit(write.io);
  wait_until_done(t, {&write});
  ASSERT_EQ(send_times(net, IoKind::Write).size(), 1u);
  EXPECT_EQ(net.sent.back().channel, 3);
  EXPECT_EQ(t.retries(), 0u);
  EXPECT_EQ(t.reconnects(), 1u);
}

TEST(UnitRecovery, ReopeningBacksOffBetweenAttempts) {
  FakeNetwork net;
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  t.connect();
  net.refusals[Side::Target] = 2;
  net.current[Side::Target]->die(ENOTCONN);
  Request write(IoKind::Write, 0);
  t.submit(write.io);
  wait_until_done(t, {&write});
  EXPECT_EQ(net.sleeps, (std::vector<milliseconds>{200ms, 400ms}));
  EXPECT_EQ(net.opens[Side::Target], 4);
  EXPECT_EQ(t.reconnects(), 1u);
}

TEST(UnitRecovery, UnreachableAfterMaxRetriesPlusOneAttempts) {
  FakeNetwork net;
  net.refusals[Side::Target] = 100;
  RecoveringTransport t(net, recovery_options(3), [] { return false; });
  try {
    t.connect();
    FAIL() << "connected to a refusing target";
  } catch (const EndpointLost& e) {  // callers tell it from a server that answered with an error
    EXPECT_EQ(e.side(), Side::Target);
    EXPECT_STREQ(e.what(), "target nbd://dst/disk unreachable after 4 attempts: connection refused");
  }
  EXPECT_EQ(net.opens[Side::Target], 4);
  EXPECT_EQ(net.sleeps, (std::vector<milliseconds>{200ms, 400ms, 800ms}));  // none after the last
}

TEST(UnitRecovery, AStoppedCopyStopsReconnecting) {
  FakeNetwork net;
  bool stopped = false;
  RecoveringTransport t(net, recovery_options(), [&] { return stopped; });
  t.connect();
  net.refusals[Side::Source] = 100;
  net.current[Side::Source]->die(ENOTCONN);
  stopped = true;
  EXPECT_THROW(t.wait(500), Error);
  EXPECT_EQ(net.opens[Side::Source], 1);
}

TEST(UnitRecovery, AdoptedConnectionsAreUsedFirst) {
  FakeNetwork net;
  RecoveringTransport t(net, recovery_options(), [] { return false; });
  t.adopt(std::make_unique<FakeChannel>(net, Side::Source, 101), std::make_unique<FakeChannel>(net, Side::Target, 102));
  Request read(IoKind::Read, 0), write(IoKind::Write, 0);
  t.submit(read.io);
  t.submit(write.io);
  wait_until_done(t, {&read, &write});
  EXPECT_EQ(net.opens[Side::Source] + net.opens[Side::Target], 0);
  EXPECT_EQ(net.sent[0].channel, 101);
  EXPECT_EQ(net.sent[1].channel, 102);
}

// A target that holds its requests without answering: after request_timeout of silence
// the connection is shut, and its requests go to a new one.
TEST(UnitRecovery, SilentConnectionIsDroppedAfterTheTimeout) {
  FakeNetwork net;
  net.silent = {2};
  RecoveringTransport t(net, recovery_options(5, 2s), [] { return false; });
  Request write(IoKind::Write, 0);
  t.submit(write.io);
  wait_until_done(t, {&write});
  EXPECT_EQ(write.error, 0);
  EXPECT_EQ(net.shutdowns, 1);
  ASSERT_EQ(send_times(net, IoKind::Write).size(), 2u);
  EXPECT_GE(send_times(net, IoKind::Write)[1], 2s);
  EXPECT_EQ(net.sent.back().channel, 3);
}

// Answers on the other connection count as replies too; a connection with nothing
// outstanding is never dropped, however long it is quiet.
TEST(UnitRecovery, IdleConnectionsAreNeverDropped) {
  FakeNetwork net;
  RecoveringTransport t(net, recovery_options(5, 1s), [] { return false; });
  t.connect();
  for (int i = 0; i < 20; ++i) t.wait(500);
  EXPECT_EQ(net.shutdowns, 0);
  EXPECT_GE(net.clock, 10s);
}

TEST(UnitRecovery, RequestsOfADroppedConnectionFailAsTimedOut) {
  FakeNetwork net;
  net.silent = {2, 3, 4};
  RecoveringTransport t(net, recovery_options(0, 1s), [] { return false; });
  Request write(IoKind::Write, 8192, 512);
  t.submit(write.io);
  try {
    for (int i = 0; i < 100; ++i) t.wait(500);
    FAIL() << "the silent target was never given up";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(),
                 "target nbd://dst/disk: write of 512 bytes at offset 8192 failed after 1 attempts: "
                 "Connection timed out");
  }
}

}  // namespace
}  // namespace mk::engine
