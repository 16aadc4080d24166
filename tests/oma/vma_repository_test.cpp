// VmaRepository scenarios (run on SQLite and MariaDB, see repository_scenarios.h):
// pairing codes are single-use and expire; VMAs get distinct tunnel ports from the base
// (a revoked VMA keeps its port); states move only forward.
#include <gtest/gtest.h>

#include "oma/errors.h"
#include "repository_scenarios.h"

namespace mk::oma::test {
namespace {

// Records the move instead of re-sealing: "VALUE|FROM>TO".
std::string moved(const std::string& sealed, const std::string& from, const std::string& to) {
  return sealed + "|" + from + ">" + to;
}

void VmasEnrolOnceWithDistinctPorts(db::Database&, Repositories& r) {
  const int64_t now = 1'000'000;
  for (const char* h : {"code-a", "code-b", "code-old"})
    r.vmas.insert_pairing_code({h, "v1:sealed", now - 10, std::string(h) == "code-old" ? now - 1 : now + 1000,
                                std::nullopt, std::nullopt, std::string("v1:psk")});
  VmaRecord in;
  in.name = "site-a";
  in.vcenter = "vc-a";
  in.ssh_public_key = "ssh-ed25519 AAAA";
  in.vma_id = "vma-a";
  VmaRecord a = r.vmas.enroll_vma("code-a", now, in, 9081, moved);
  EXPECT_EQ(a.tunnel_port, 9081);
  EXPECT_EQ(a.state, VmaState::Pending);
  // The code's secrets are re-sealed for the VMA's row (bound to where they are stored).
  EXPECT_EQ(a.api_token_sealed, "v1:sealed|vma_pairing_codes.api_token_sealed/code-a>vmas.api_token_sealed/vma-a");
  EXPECT_EQ(r.vmas.get_vma("vma-a").nbd_psk_sealed,
            "v1:psk|vma_pairing_codes.nbd_psk_sealed/code-a>vmas.nbd_psk_sealed/vma-a");
  in.vma_id = "vma-a2";
  EXPECT_THROW(r.vmas.enroll_vma("code-a", now, in, 9081, moved), Conflict);    // used
  EXPECT_THROW(r.vmas.enroll_vma("code-old", now, in, 9081, moved), Conflict);  // expired
  EXPECT_THROW(r.vmas.enroll_vma("code-x", now, in, 9081, moved), Conflict);    // unknown
  EXPECT_FALSE(r.vmas.find_vma("vma-a2"));
  in.vma_id = "vma-b";
  EXPECT_EQ(r.vmas.enroll_vma("code-b", now, in, 9081, moved).tunnel_port, 9082);
  ASSERT_EQ(r.vmas.list_vmas().size(), 2u);
}

void VmaStatesMoveOnlyForward(db::Database&, Repositories& r) {
  const int64_t now = now_ms();
  r.vmas.insert_pairing_code({"code-a", "v1:sealed", now, now + 60000, std::nullopt, std::nullopt, std::nullopt});
  VmaRecord in;
  in.vma_id = "vma-a";
  in.name = "site-a";
  r.vmas.enroll_vma("code-a", now, in, 9081, moved);
  EXPECT_THROW(r.vmas.set_vma_state("vma-a", VmaState::Pending), Conflict);
  r.vmas.set_vma_state("vma-a", VmaState::Approved);
  EXPECT_TRUE(r.vmas.get_vma("vma-a").approved_at);
  EXPECT_EQ(r.vmas.get_vma("vma-a").state, VmaState::Approved);
  EXPECT_THROW(r.vmas.set_vma_state("vma-a", VmaState::Approved), Conflict);
  r.vmas.set_vma_state("vma-a", VmaState::Revoked);
  EXPECT_TRUE(r.vmas.get_vma("vma-a").revoked_at);
  EXPECT_THROW(r.vmas.set_vma_state("vma-a", VmaState::Approved), Conflict);
  EXPECT_THROW(r.vmas.set_vma_state("vma-a", VmaState::Revoked), Conflict);
  EXPECT_THROW(r.vmas.get_vma("nope"), NotFound);
}

}  // namespace

Scenarios vma_repository_scenarios() {
  return {{"VmasEnrolOnceWithDistinctPorts", VmasEnrolOnceWithDistinctPorts},
          {"VmaStatesMoveOnlyForward", VmaStatesMoveOnlyForward}};
}

}  // namespace mk::oma::test
