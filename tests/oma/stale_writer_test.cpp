// A pass that ends while its VMA cannot be reached (issue 16, fix 2), with the real
// `oma` binary, its real nbdkit export server and the fake VMA. The test holds an NBD
// connection to the job's export, as the VMA's copy does, and writes through it; then
// the VMA falls silent. Cancelling (or a replicate call that got no answer) may end the
// job only once that connection is closed: afterwards a write on it fails and the
// export no longer accepts connections, and meanwhile no other job takes the VM.
#include <gtest/gtest.h>

#include <thread>

#include "engine/nbd_connection.h"
#include "fake_vma.h"
#include "oma_process.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma {
namespace {

using nlohmann::json;

struct Site {
  mk::test::TempDir dir{"mk-oma-stale-writer"};
  std::string data = dir.file("data");
  test::FakeVma vma{mk::test::make_psk_file(dir.file("vma.psk"), "oma")};
  test::OmaProcess oma{data, vma.url(), dir.file("oma.log")};
  test::ApiClient api{oma.port, test::read_admin_token(data)};
  std::string vm = test::test_vm_uuid(1);

  // The job's one export, as a client on this host reaches it (the OMA's own PSK).
  Endpoint export_endpoint(const json& job) {
    Endpoint e;
    e.uri = fmt::format("nbds://127.0.0.1:{}/{}", api.get("/health").body["nbd_port"].get<int>(),
                        job["disks"][0]["export"].get<std::string>());
    e.tls.psk_file = data + "/nbd-psk.keys";
    e.role = "target";
    return e;
  }
  std::string events(const json& job) {
    std::string out;
    for (const auto& e : job["events"]) out += e["message"].get<std::string>() + "\n";
    return out;
  }
};

bool writes(engine::NbdConnection& c) {
  std::string block(4096, 'w');
  try {
    c.pwrite(block.data(), block.size(), 0);
    c.flush();
    return true;
  } catch (const std::exception&) {
    return false;
  }
}

TEST(StaleWriter, CancelWhileTheVmaIsUnreachableEndsOnlyAfterItsConnectionsAreClosed) {
  Site s;
  ASSERT_EQ(s.api.post("/api/v1/vms", test::vm_body(s.vm, 1, 1048576).dump()).status, 201);
  std::string job = s.api.post("/api/v1/jobs", json{{"vm_id", s.vm}, {"kind", "full"}}.dump()).body["job_id"];
  json seen = test::wait_for_job(s.api, job, [](const json& j) { return j["status"] == "copying"; });
  ASSERT_EQ(seen["status"], "copying") << seen.dump(2);
  auto writer = engine::NbdConnection::open(s.export_endpoint(seen));
  ASSERT_TRUE(writes(*writer));

  s.vma.go_silent();
  ASSERT_EQ(s.api.post("/api/v1/jobs/" + job + "/cancel", "").status, 202);
  json j = test::wait_for_job(s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "cancelled") << j.dump(2);
  EXPECT_NE(s.events(j).find("closed every connection"), std::string::npos) << s.events(j);
  EXPECT_FALSE(writes(*writer)) << "the VMA's connection still writes into the volume of a cancelled job";
  EXPECT_THROW(engine::NbdConnection::open(s.export_endpoint(seen)), Error) << "the export still takes writers";
  EXPECT_TRUE(s.vma.violations().empty());
}

TEST(StaleWriter, AReplicateCallWithoutAnAnswerFailsOnlyAfterTheWriterIsCutOff) {
  Site s;
  ASSERT_EQ(s.api.post("/api/v1/vms", test::vm_body(s.vm, 1, 1048576).dump()).status, 201);
  // The VMA accepts the job, starts writing and never answers the call.
  s.vma.hang_replicate();
  std::string job = s.api.post("/api/v1/jobs", json{{"vm_id", s.vm}, {"kind", "full"}}.dump()).body["job_id"];
  for (int i = 0; i < 3000 && !s.vma.knows(job); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  ASSERT_TRUE(s.vma.knows(job));
  json seen = s.api.get("/api/v1/jobs/" + job).body;
  auto writer = engine::NbdConnection::open(s.export_endpoint(seen));
  ASSERT_TRUE(writes(*writer));
  // While the call hangs, the VM is held: nothing else starts on it.
  EXPECT_EQ(s.api.post("/api/v1/jobs", json{{"vm_id", s.vm}, {"kind", "full"}}.dump()).status, 409);

  s.vma.go_silent();  // ends the hanging call without an answer; stop cannot be sent either
  json j = test::wait_for_job(s.api, job, test::job_ended);
  EXPECT_EQ(j["status"], "failed") << j.dump(2);
  EXPECT_NE(s.events(j).find("closed every connection"), std::string::npos) << s.events(j);
  EXPECT_FALSE(writes(*writer)) << "the VMA's connection still writes into the volume of a failed job";
}

}  // namespace
}  // namespace mk::oma
