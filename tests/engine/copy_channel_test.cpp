// The copy's units over real servers, without the migratekit tool: RequestPipeline and
// Durability over a RecoveringTransport whose NbdNetwork opens libnbd connections to
// nbdkit, and the NbdChannel's report of a server that went away.
#include <gtest/gtest.h>

#include <csignal>
#include <cstring>

#include "copy_fixture.h"
#include "engine/durability.h"
#include "engine/nbd_channel.h"
#include "engine/recovery.h"
#include "engine/request_pipeline.h"

namespace mk::test {
namespace {

using namespace mk::engine;
using mk::MiB;

Endpoint endpoint(const std::string& uri, const std::string& role) {
  Endpoint e;
  e.uri = uri;
  e.role = role;
  return e;
}

RecoveryOptions quick_recovery() {
  RecoveryOptions o;
  o.retry_delay = std::chrono::milliseconds(10);
  return o;
}

class CopyChannel : public CopyTest {};

// A plan of data and zeros copied with the units alone; the target is flushed at the end.
TEST_F(CopyChannel, PipelineAndDurabilityOverLibnbd) {
  const uint64_t size = 4 * MiB;
  std::string source = make_disk("source.img", size, {{0, MiB}, {3 * MiB, MiB / 2}});
  std::string target = file("target.img");
  write_random_at(target, 0, size, 99);  // a reused target: zeros must be written
  NbdkitServer& dst = serve(target, {.args = {"logfile=" + file("target.log")}, .filters = {"log"}});
  Endpoint src_ep = endpoint(serve(source).uri(), "source"), dst_ep = endpoint(dst.uri(), "target");
  NbdNetwork net(src_ep, dst_ep);
  RecoveringTransport transport(net, quick_recovery(), [] { return false; });
  PipelineOptions po;
  po.request_size = 256 * 1024;
  po.requests = 8;
  DurabilityOptions dopt;
  std::vector<Chunk> redone;
  Durability durability(transport, dopt, dst_ep.describe(), [&](const Chunk& c) { redone.push_back(c); });
  uint64_t confirmed = 0;
  RequestPipeline pipeline(transport, po, [&](const Chunk& c) {
    confirmed += c.length;
    durability.confirmed(c);
  });
  WorkQueue queue({{0, 2 * MiB, ExtentKind::Data}, {2 * MiB, MiB, ExtentKind::Zero}, {3 * MiB, MiB, ExtentKind::Data}},
                  po.request_size, 1 << 30);
  for (int round = 0; round < 100000; ++round) {
    pipeline.fill(queue);
    if (pipeline.in_flight() == 0 && !durability.flushing() && queue.exhausted() && !durability.start_final_flush()) {
      break;
    }
    transport.wait(500);
  }
  EXPECT_EQ(confirmed, size);
  EXPECT_TRUE(redone.empty());
  EXPECT_TRUE(files_identical(source, target));
  // Written: the source's data (1.5 MiB). Zeroed: what read as zeros ([1, 2) and
  // [3.5, 4) MiB) and the plan's zero range ([2, 3) MiB), never read.
  EXPECT_EQ(pipeline.stats().bytes_written, MiB + MiB / 2);
  EXPECT_EQ(pipeline.stats().bytes_zeroed, 2 * MiB + MiB / 2);
  EXPECT_EQ(transport.retries(), 0u);
  EXPECT_NE(read_file(file("target.log")).find("Flush"), std::string::npos);
}

// The target server is killed and started again between two requests: the next write
// finds the connection dead, and recovery reopens it, tells the owner of unflushed
// writes, and sends the write on the new connection.
TEST_F(CopyChannel, KilledServerIsNoticedAndReopened) {
  const uint64_t size = 1 * MiB;
  std::string target = file("target.img");
  create_sparse_file(target, size);
  NbdkitServer& dst = serve(target);
  Endpoint src_ep = endpoint(serve(make_disk("source.img", size, {})).uri(), "source");
  Endpoint dst_ep = endpoint(dst.uri(), "target");
  NbdNetwork net(src_ep, dst_ep);
  RecoveringTransport transport(net, quick_recovery(), [] { return false; });
  int replaced = 0;
  transport.on_target_replaced([&] { ++replaced; });
  transport.connect();

  dst.signal(SIGKILL);
  dst.restart();
  std::string data(64 * 1024, 'k');
  int done = 0, error = -1;
  IoRequest write;
  write.kind = IoKind::Write;
  write.buf = data.data();
  write.length = data.size();
  write.offset = 128 * 1024;
  struct Result {
    int* done;
    int* error;
  } result{&done, &error};
  write.owner = &result;
  write.on_done = [](IoRequest& r) {
    auto* res = static_cast<Result*>(r.owner);
    ++*res->done;
    *res->error = r.error;
  };
  transport.submit(write);
  for (int round = 0; round < 200 && done == 0; ++round) transport.wait(500);
  ASSERT_EQ(done, 1);
  EXPECT_EQ(error, 0);
  EXPECT_EQ(transport.reconnects(), 1u);
  EXPECT_EQ(replaced, 1);
  EXPECT_EQ(read_at(target, 128 * 1024, data.size()), data);
}

}  // namespace
}  // namespace mk::test
