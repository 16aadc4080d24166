// The OMA's calls to a VMA are signed, never carrying the VMA's token, and only signed
// answers are taken (protocol/request_auth.h; issue 13, finding 7): another process that
// holds the VMA's tunnel port while the tunnel is down learns no secret and cannot pass
// for the VMA. Against a strict fake VMA that checks signatures as the VMA does.
#include <gtest/gtest.h>
#include <httplib.h>

#include <mutex>
#include <thread>

#include "fake_vma.h"
#include "oma/vma/vma_client.h"

namespace mk::oma::test {
namespace {

const std::string kToken = "mko_" + std::string(64, 'a');

// Any process on the port: records what it is sent, answers a well-formed health.
struct Impostor {
  Impostor() {
    server.Get(".*", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::lock_guard lock(mu);
        for (const auto& [name, value] : req.headers) seen += name + ": " + value + "\n";
      }
      protocol::Health h;
      h.status = protocol::HealthStatus::Ok;
      h.vma_instance = protocol::new_uuid();
      h.vcenter.reachable = true;
      h.tunnel = protocol::TunnelHealth{protocol::TunnelState::Up, 1, std::nullopt};
      res.set_header(protocol::kVersionHeader, std::to_string(protocol::kVersion));
      res.set_header(protocol::kAnswerMacHeader, std::string(64, '0'));
      res.set_content(protocol::encode(h).dump(), "application/json");
    });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~Impostor() {
    server.stop();
    thread.join();
  }
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::mutex mu;
  std::string seen;
};

TEST(VmaClientSigning, AnotherProcessOnTheTunnelPortGetsNoTokenAndIsNotBelieved) {
  Impostor impostor;
  HttpVmaClient client("http://127.0.0.1:" + std::to_string(impostor.port), std::chrono::seconds(10), kToken);
  try {
    client.health();
    ADD_FAILURE() << "the OMA took an unsigned answer for the VMA's";
  } catch (const VmaUnreachable& e) {
    EXPECT_NE(std::string(e.what()).find("not signed with the token"), std::string::npos) << e.what();
  }
  std::lock_guard lock(impostor.mu);
  EXPECT_NE(impostor.seen.find("MK-HMAC-SHA256 t="), std::string::npos) << impostor.seen;
  EXPECT_EQ(impostor.seen.find(kToken), std::string::npos) << "the token was sent: " << impostor.seen;
  EXPECT_EQ(impostor.seen.find(kToken.substr(4, 32)), std::string::npos) << impostor.seen;
}

TEST(VmaClientSigning, TheVmaAcceptsSignedCallsAndAnotherTokenIsRefusedBothWays) {
  FakeVma vma("");
  vma.require_signatures(kToken);
  HttpVmaClient client(vma.url(), std::chrono::seconds(10), kToken);
  EXPECT_EQ(client.health().status, protocol::HealthStatus::Ok);
  EXPECT_TRUE(vma.violations().empty());

  // An OMA holding another token: the VMA refuses it (401), and its refusal, signed with
  // no token the OMA knows, is not taken for the VMA's answer either.
  HttpVmaClient stranger(vma.url(), std::chrono::seconds(10), "mko_" + std::string(64, 'b'));
  EXPECT_THROW(stranger.health(), VmaUnreachable);
  ASSERT_EQ(vma.violations().size(), 1u);
  EXPECT_NE(vma.violations()[0].find("wrong signature"), std::string::npos) << vma.violations()[0];
}

}  // namespace
}  // namespace mk::oma::test
