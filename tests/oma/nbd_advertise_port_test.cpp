// --nbd-advertise-port (oma.conf nbd-advertise-port): an OMA behind NAT or a port forward
// that changes the NBD port tells VMAs the port they reach, in pairing bundles and in
// every job's NBD target, while its export server still listens on --nbd-port. The real
// `oma` binary with the fake VMA; the value is checked like the other ports.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/subprocess.h"
#include "fake_vma.h"
#include "oma_process.h"
#include "oma_service.h"
#include "support/files.h"
#include "support/temp_dir.h"

namespace mk::oma::test {
namespace {

using nlohmann::json;

TEST(NbdAdvertisePort, BundlesAndJobsNameTheAdvertisedPortWhileTheServerListensOnItsOwn) {
  mk::test::TempDir dir{"mk-oma-nbd-advertise"};
  std::string data = dir.file("data"), out;
  ASSERT_EQ(run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file("host_key")}, out), 0);
  // The OMA's own NBD key (it uses one it finds): the fake VMA writes with it.
  FakeVma vma{(std::filesystem::create_directories(data), mk::test::make_psk_file(data + "/nbd-psk.keys", "oma"))};
  vma.set_auto_complete(true);
  // A port nothing listens on here: what a NAT device in front of the OMA would forward.
  const int advertised = 47;
  OmaProcess oma{data, vma.url(), dir.file("oma.log"),
                 {"--nbd-advertise-port", std::to_string(advertised), "--ssh-host-key-file",
                  dir.file("host_key.pub")}};
  ApiClient api{oma.port, read_admin_token(data)};
  int listening = api.get("/health").body["nbd_port"].get<int>();
  ASSERT_GT(listening, 0);
  ASSERT_NE(listening, advertised);
  vma.serve_exports_on(listening);  // the fake VMA stands where the forward ends

  HttpReply bundle = api.post("/api/v1/vmas/pairing-bundles", "{}");
  ASSERT_EQ(bundle.status, 201) << bundle.raw;
  EXPECT_EQ(bundle.body["nbd_port"], advertised) << bundle.body.dump(2);

  std::string vm = test_vm_uuid(1);
  ASSERT_EQ(api.post("/api/v1/vms", vm_body(vm, 1, 1048576).dump()).status, 201);
  std::string job = api.post("/api/v1/jobs", json{{"vm_id", vm}, {"kind", "full"}}.dump()).body["job_id"];
  json j = wait_for_job(api, job, job_ended);
  EXPECT_EQ(j["status"], "completed") << j.dump(2);
  auto requests = vma.replicate_requests();
  ASSERT_EQ(requests.size(), 1u);
  EXPECT_EQ(requests[0].nbd.port, advertised) << "the job's NBD target is the port the OMA listens on, not the "
                                                 "advertised one";
  EXPECT_EQ(requests[0].nbd.host, "127.0.0.1");
  EXPECT_TRUE(vma.violations().empty());
}

TEST(NbdAdvertisePort, IsCheckedLikeTheOtherPorts) {
  mk::test::TempDir dir{"mk-oma-nbd-advertise-check"};
  for (std::string bad : {"0", "65536", "x"}) {
    SCOPED_TRACE(bad);
    std::string out, err = dir.file("err");
    int rc = run_capture({OMA_BIN, "--data-dir", dir.file("data"), "--check-config", "--config", "/dev/null",
                          "--nbd-advertise-port", bad},
                         out, err);
    std::string text = mk::test::read_file(err);
    EXPECT_EQ(rc, 2) << text;
    EXPECT_NE(text.find("--nbd-advertise-port"), std::string::npos) << text;
  }
  // In oma.conf: the file, the line and the setting are named.
  std::string conf = dir.file("oma.conf");
  std::ofstream(conf) << "data-dir = \"" << dir.file("data") << "\"\n# NAT\nnbd-advertise-port = 70000\n";
  std::string out, err = dir.file("err");
  EXPECT_EQ(run_capture({OMA_BIN, "--check-config", "--config", conf}, out, err), 2);
  std::string text = mk::test::read_file(err);
  EXPECT_NE(text.find(conf + ":3: nbd-advertise-port: "), std::string::npos) << text;
  std::ofstream(conf) << "data-dir = \"" << dir.file("data") << "\"\nnbd-advertise-port = 443\n";
  EXPECT_EQ(run_capture({OMA_BIN, "--check-config", "--config", conf}, out, err), 0) << mk::test::read_file(err);
  EXPECT_FALSE(std::filesystem::exists(dir.file("data")));
}

}  // namespace
}  // namespace mk::oma::test
