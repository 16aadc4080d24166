// Pairing between the OMA and its VMAs: the bundle, `vma pair`, enrolment by one-time
// code, approval into the OMA-managed authorized_keys file, VM ownership.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/subprocess.h"
#include "oma/pairing/authorized_keys.h"
#include "support/files.h"
#include "tunnel_lab.h"

namespace mk::tunnel_test {
namespace {

using nlohmann::json;


std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  return s;
}

// A fresh ssh-ed25519 public key line, as a VMA would send.
std::string new_public_key(const mk::test::TempDir& dir, const std::string& name) {
  std::string out;
  EXPECT_EQ(mk::run_capture({"ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", dir.file(name)}, out), 0);
  return trim(mk::test::read_file(dir.file(name) + ".pub"));
}

// POST /api/v1/vmas/enroll as a VMA speaking `version` (nullopt: one older than
// versioned protocols, which sends none).
Reply enroll(TunnelLab& lab, const std::string& code, const std::string& key, const std::string& name = "site",
             std::optional<int> version = protocol::kVersion) {
  json body = {{"name", name}, {"vcenter", "vc.example"}, {"ssh_public_key", key}};
  if (version) body["protocol_version"] = *version;
  return http("POST", lab.api_port(), "/api/v1/vmas/enroll", code.empty() ? "" : "Pairing " + code, body.dump());
}

TEST(Pairing, BundleImportWritesPrivateFilesAndEnrolsAPendingVma) {
  TunnelLab lab;
  json bundle = lab.issue_bundle();
  for (const char* f : {"oma_api_url", "ssh_host", "ssh_user", "ssh_host_key", "nbd_host", "nbd_psk_identity",
                        "nbd_psk_key", "vma_api_token", "pairing_code"})
    EXPECT_TRUE(bundle.contains(f) && bundle[f].is_string() && !bundle[f].get<std::string>().empty()) << f;
  EXPECT_EQ(bundle["protocol_version"], protocol::kVersion);
  EXPECT_EQ(bundle["ssh_port"], lab.sshd().port());
  EXPECT_EQ(bundle["nbd_port"], lab.oma().export_server().port());
  EXPECT_EQ(bundle["ssh_host_key"], lab.sshd().host_public_key());
  // The VMA's own NBD PSK identity, not the OMA's: authorised only once approved.
  EXPECT_EQ(bundle["nbd_tls"], "psk");
  EXPECT_EQ(bundle["nbd_psk_identity"].get<std::string>().rfind("vma-", 0), 0u) << bundle["nbd_psk_identity"];
  EXPECT_EQ(bundle["nbd_psk_key"].get<std::string>().size(), 64u);
  std::string psk = bundle["nbd_psk_identity"].get<std::string>() + ":" + bundle["nbd_psk_key"].get<std::string>();
  std::string server_psk = mk::test::read_file(lab.oma().config().tls_psk_file);
  EXPECT_EQ(server_psk.find(bundle["nbd_psk_key"].get<std::string>()), std::string::npos);

  mk::test::TempDir vma("mk-vma");
  std::string state = vma.file("state"), out, err;
  ASSERT_EQ(lab.run_pair(bundle, state, "site-a", "vc-a.example", &out, &err), 0) << err;
  auto paired = mk::vma::load_paired_state(state);
  EXPECT_NE(out.find(paired.vma_id), std::string::npos) << out;
  EXPECT_NE(out.find("/approve"), std::string::npos) << out;
  EXPECT_EQ(paired.tunnel_port, std::stoi(lab.tunnel_port_base()));

  EXPECT_EQ(mk::test::file_mode(state), 0700);
  for (const char* f : {"known_hosts", "nbd-psk.keys", "api.token", "id_ed25519", "id_ed25519.pub", "pairing.json"})
    EXPECT_EQ(mk::test::file_mode(state + "/" + f), 0600) << f;
  EXPECT_EQ(trim(mk::test::read_file(state + "/api.token")), bundle["vma_api_token"]);
  EXPECT_EQ(trim(mk::test::read_file(state + "/nbd-psk.keys")), psk);
  std::string host_blob = bundle["ssh_host_key"].get<std::string>().substr(12, 68);
  EXPECT_NE(mk::test::read_file(state + "/known_hosts").find(host_blob), std::string::npos);

  // No secret in what pairing printed or logged (the OMA's log included), in the
  // non-secret state file, or in clear in the OMA's database.
  std::string db = mk::test::read_file(lab.oma().config().data_dir + "/oma.db");
  if (std::filesystem::exists(lab.oma().config().data_dir + "/oma.db-wal"))  // SQLite WAL: recent pages
    db += mk::test::read_file(lab.oma().config().data_dir + "/oma.db-wal");
  ASSERT_NE(db.find("site-a"), std::string::npos);  // the check reads where the data is
  for (const char* f : {"vma_api_token", "pairing_code", "nbd_psk_key"}) {
    std::string secret = bundle[f];
    EXPECT_EQ((out + err).find(secret), std::string::npos) << f;
    EXPECT_EQ(mk::test::read_file(state + "/pairing.json").find(secret), std::string::npos) << f;
    EXPECT_EQ(db.find(secret), std::string::npos) << f;
  }

  Reply list = http("GET", lab.api_port(), "/api/v1/vmas", lab.admin());
  ASSERT_EQ(list.status, 200) << list.raw;
  ASSERT_EQ(list.body["vmas"].size(), 1u);
  EXPECT_EQ(list.body["vmas"][0]["state"], "pending");
  EXPECT_EQ(list.body["vmas"][0]["name"], "site-a");
  EXPECT_EQ(list.body["vmas"][0]["tunnel_state"], "down");
  // Pending: neither the SSH key nor the NBD identity is authorised yet.
  EXPECT_EQ(mk::test::read_file(lab.authorized_keys()).find("ssh-ed25519"), std::string::npos);
  EXPECT_EQ(mk::test::read_file(lab.oma().config().tls_psk_file), server_psk);
}

TEST(Pairing, EnrolmentRefusesMissingWrongUsedAndExpiredCodes) {
  TunnelLab lab;
  mk::test::TempDir keys("mk-keys");
  std::string key = new_public_key(keys, "k1");
  json bundle = lab.issue_bundle();
  std::string code = bundle["pairing_code"];

  EXPECT_EQ(enroll(lab, "", key).status, 401);
  Reply wrong = enroll(lab, "mkp_" + std::string(64, 'a'), key);
  EXPECT_EQ(wrong.status, 403) << wrong.raw;
  EXPECT_NE(wrong.raw.find("unknown pairing code"), std::string::npos) << wrong.raw;
  // An API token is not a pairing code.
  EXPECT_EQ(http("POST", lab.api_port(), "/api/v1/vmas/enroll", lab.admin(),
                 json{{"name", "x"}, {"vcenter", "y"}, {"ssh_public_key", key}}.dump()).status, 401);

  // A bad key is refused before the code is spent.
  Reply bad = enroll(lab, code, "ssh-rsa AAAAB3NzaC1yc2E= evil\nrestrict");
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_EQ(bad.body["field"], "ssh_public_key") << bad.raw;
  Reply injected = enroll(lab, code, "command=\"/bin/sh\" " + key);
  EXPECT_EQ(injected.status, 400) << injected.raw;

  Reply ok = enroll(lab, code, key);
  EXPECT_EQ(ok.status, 202) << ok.raw;
  EXPECT_EQ(ok.body["state"], "pending");
  Reply again = enroll(lab, code, new_public_key(keys, "k2"));
  EXPECT_EQ(again.status, 403) << again.raw;
  EXPECT_NE(again.raw.find("already used"), std::string::npos) << again.raw;

  json short_lived = lab.issue_bundle(1);
  // Waits for the code's expiry (one second); no duration is asserted.
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  Reply expired = enroll(lab, short_lived["pairing_code"], new_public_key(keys, "k3"));
  EXPECT_EQ(expired.status, 403) << expired.raw;
  EXPECT_NE(expired.raw.find("expired"), std::string::npos) << expired.raw;

  // `vma pair` with a used bundle fails and says why.
  mk::test::TempDir vma("mk-vma");
  std::string err;
  EXPECT_EQ(lab.run_pair(bundle, vma.file("state"), "late", "vc", nullptr, &err), 1);
  EXPECT_NE(err.find("already used"), std::string::npos) << err;

  Reply list = http("GET", lab.api_port(), "/api/v1/vmas", lab.admin());
  EXPECT_EQ(list.body["vmas"].size(), 1u) << list.raw;
  // A bundle needs no body (the default lifetime).
  EXPECT_EQ(http("POST", lab.api_port(), "/api/v1/vmas/pairing-bundles", lab.admin()).status, 201);
  // Issuing bundles and approving need an admin token.
  Reply op = http("POST", lab.api_port(), "/api/v1/tokens", lab.admin(), json{{"name", "op"}, {"role", "operator"}}.dump());
  std::string op_auth = "Bearer " + op.body["token"].get<std::string>();
  EXPECT_EQ(http("POST", lab.api_port(), "/api/v1/vmas/pairing-bundles", op_auth, "{}").status, 403);
  EXPECT_EQ(http("POST", lab.api_port(), "/api/v1/vmas/" + ok.body["vma_id"].get<std::string>() + "/approve", op_auth)
                .status, 403);
}

TEST(Pairing, ApprovalWritesOneRestrictedKeyLineAndRevocationRemovesIt) {
  TunnelLab lab;
  auto vma = lab.make_vma("site-a", /*approve=*/true, false, /*start_tunnel=*/false);
  std::string ak = mk::test::read_file(lab.authorized_keys());
  EXPECT_EQ(mk::test::file_mode(lab.authorized_keys()), 0600);
  std::string pub = trim(mk::test::read_file(vma->state_dir + "/id_ed25519.pub"));
  std::string expected = fmt::format(
      "restrict,port-forwarding,permitlisten=\"127.0.0.1:{}\",permitopen=\"127.0.0.1:{}\",command=\"/bin/false\" {} "
      "vma-{}\n",
      vma->paired.tunnel_port, lab.oma().export_server().port(), pub.substr(0, pub.rfind(' ')), vma->paired.vma_id);
  EXPECT_NE(ak.find(expected), std::string::npos) << ak;
  EXPECT_EQ(std::count(ak.begin(), ak.end(), '\n'), 2) << ak;  // header comment + one key
  // The OMA's PSK file keeps its own line only; this VMA's identity is in the PSK file of
  // its own nbdkit (NBD isolation), alone.
  std::string psk_file = lab.oma().config().tls_psk_file;
  std::string vma_psk = mk::test::read_file(vma->paired.psk_file());
  std::string server_psk = mk::test::read_file(psk_file);
  EXPECT_EQ(server_psk.rfind("oma:", 0), 0u) << server_psk;
  EXPECT_EQ(server_psk.find(trim(vma_psk)), std::string::npos) << server_psk;
  EXPECT_EQ(mk::test::file_mode(psk_file), 0600);
  std::string identity = vma_psk.substr(0, vma_psk.find(':'));
  std::string own_dir = lab.oma().config().data_dir + "/nbd-isolation/vma/" + identity;
  EXPECT_EQ(trim(mk::test::read_file(own_dir + "/psk.keys")), trim(vma_psk));
  EXPECT_EQ(mk::test::file_mode(own_dir + "/psk.keys"), 0600);
  EXPECT_EQ(mk::test::file_mode(lab.oma().config().data_dir + "/nbd-isolation/sockets"), 0700);

  Reply twice = http("POST", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/approve", lab.admin());
  EXPECT_EQ(twice.status, 409) << twice.raw;
  Reply revoke = http("POST", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/revoke", lab.admin());
  ASSERT_EQ(revoke.status, 200) << revoke.raw;
  EXPECT_EQ(revoke.body["state"], "revoked");
  EXPECT_EQ(revoke.body["session_ended"], false);  // no tunnel was running
  EXPECT_EQ(mk::test::read_file(lab.authorized_keys()).find("ssh-ed25519"), std::string::npos);
  EXPECT_EQ(mk::test::file_mode(lab.authorized_keys()), 0600);
  EXPECT_EQ(mk::test::read_file(psk_file), server_psk);
  EXPECT_FALSE(std::filesystem::exists(own_dir)) << "a revoked VMA's NBD key stayed on the OMA";
  EXPECT_EQ(http("POST", lab.api_port(), "/api/v1/vmas/" + vma->paired.vma_id + "/approve", lab.admin()).status, 409);
}

TEST(Pairing, EachVmBelongsToTheVmaThatDiscoveredIt) {
  TunnelLab lab;
  auto a = lab.make_vma("site-a", true, false, false);
  auto b = lab.make_vma("site-b", false, false, false);
  auto add_vm = [&](const std::string& vm_id, const std::optional<std::string>& vma_id) {
    json body = {{"vm_id", vm_id}, {"name", "vm"}, {"vcenter", "vc"}, {"datacenter", "dc"}, {"cpus", 1},
                 {"memory_mb", 512}, {"disks", json::array({{{"key", "2000"}, {"unit", 0}, {"capacity_bytes", 1048576}}})}};
    if (vma_id) body["vma_id"] = *vma_id;
    return http("POST", lab.api_port(), "/api/v1/vms", lab.admin(), body.dump());
  };
  std::string vm1 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0001", vm2 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0002",
              vm3 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0003";
  ASSERT_EQ(add_vm(vm1, a->paired.vma_id).status, 201);
  ASSERT_EQ(add_vm(vm2, b->paired.vma_id).status, 201);
  ASSERT_EQ(add_vm(vm3, std::nullopt).status, 201);
  Reply unknown = add_vm("4210a4c2-6b57-4d4b-9d8e-0c1f2a3b0004", "4210a4c2-6b57-4d4b-9d8e-0c1f2a3bffff");
  EXPECT_EQ(unknown.status, 400) << unknown.raw;
  EXPECT_EQ(unknown.body["field"], "vma_id");

  auto& pairing = lab.oma().pairing();
  auto c1 = pairing.client_for_vm(vm1);
  ASSERT_TRUE(c1);
  EXPECT_EQ(c1->describe(), fmt::format("VMA at http://127.0.0.1:{}", a->paired.tunnel_port));
  EXPECT_EQ(pairing.client_for_vm(vm3), nullptr);  // the default VMA (--vma-url)
  try {
    pairing.client_for_vm(vm2);
    ADD_FAILURE() << "a pending VMA's VM got a client";
  } catch (const mk::oma::VmaUnreachable& e) {
    EXPECT_NE(std::string(e.what()).find("pending"), std::string::npos) << e.what();
  }
  // A job for a VM of an unapproved VMA fails, naming why.
  Reply job = http("POST", lab.api_port(), "/api/v1/jobs", lab.admin(), json{{"vm_id", vm2}, {"kind", "full"}}.dump());
  ASSERT_EQ(job.status, 201) << job.raw;
  std::string job_id = job.body["job_id"];
  json j;
  EXPECT_TRUE(eventually([&] {
    j = http("GET", lab.api_port(), "/api/v1/jobs/" + job_id, lab.admin()).body;
    return j["status"] == "failed";
  })) << j.dump();
  EXPECT_NE(j["error"].dump().find("site-b"), std::string::npos) << j.dump();
}

// An OMA and a VMA of different protocol versions refuse each other at enrolment, with a
// message naming both versions and what to upgrade, and the pairing code is not spent.
TEST(Pairing, EnrolmentAcrossProtocolVersionsIsRefusedBeforeTheCodeIsSpent) {
  TunnelLab lab;
  mk::test::TempDir keys("mk-keys");
  json bundle = lab.issue_bundle();
  std::string code = bundle["pairing_code"];
  const int newer = protocol::kVersion + 1;

  Reply from_newer = enroll(lab, code, new_public_key(keys, "k1"), "site", newer);
  EXPECT_EQ(from_newer.status, 409) << from_newer.raw;
  EXPECT_NE(from_newer.raw.find(fmt::format("the VMA speaks protocol version {} and this OMA speaks version {}", newer,
                                            protocol::kVersion)),
            std::string::npos)
      << from_newer.raw;
  EXPECT_NE(from_newer.raw.find("upgrade the OMA"), std::string::npos) << from_newer.raw;
  Reply from_older = enroll(lab, code, new_public_key(keys, "k2"), "site", std::nullopt);
  EXPECT_EQ(from_older.status, 409) << from_older.raw;
  EXPECT_NE(from_older.raw.find("the VMA sent no protocol version"), std::string::npos) << from_older.raw;
  EXPECT_NE(from_older.raw.find("upgrade the VMA"), std::string::npos) << from_older.raw;
  EXPECT_EQ(http("GET", lab.api_port(), "/api/v1/vmas", lab.admin()).body["vmas"].size(), 0u);

  // `vma pair` with a bundle of another version refuses before it writes anything.
  mk::test::TempDir vma("mk-vma");
  json from_newer_oma = bundle;
  from_newer_oma["protocol_version"] = newer;
  std::string err;
  EXPECT_EQ(lab.run_pair(from_newer_oma, vma.file("state"), "site-a", "vc-a", nullptr, &err), 2);
  EXPECT_NE(err.find(fmt::format("the OMA speaks protocol version {} and this VMA speaks version {}", newer,
                                 protocol::kVersion)),
            std::string::npos)
      << err;
  EXPECT_NE(err.find("upgrade the VMA"), std::string::npos) << err;
  json from_older_oma = bundle;
  from_older_oma.erase("protocol_version");
  EXPECT_EQ(lab.run_pair(from_older_oma, vma.file("state"), "site-a", "vc-a", nullptr, &err), 2);
  EXPECT_NE(err.find("the OMA sent no protocol version"), std::string::npos) << err;
  EXPECT_NE(err.find("upgrade the OMA"), std::string::npos) << err;
  EXPECT_FALSE(std::filesystem::exists(vma.file("state")));

  // The code was never spent: the same bundle pairs a VMA of this version.
  ASSERT_EQ(lab.run_pair(bundle, vma.file("state"), "site-a", "vc-a", nullptr, &err), 0) << err;
  EXPECT_EQ(http("GET", lab.api_port(), "/api/v1/vmas", lab.admin()).body["vmas"].size(), 1u);
}

#ifdef VMA_BIN
TEST(Pairing, TheVmaBinaryPairsFromABundleFile) {
  TunnelLab lab;
  mk::test::TempDir dir("mk-vma-bin");
  {
    std::ofstream f(dir.file("bundle.json"));
    f << lab.issue_bundle().dump();
  }
  std::string state = dir.file("state"), out;
  int rc = mk::run_capture({VMA_BIN, "pair", "--bundle", dir.file("bundle.json"), "--state-dir", state, "--name",
                            "site-bin", "--vcenter", "vc-bin.example"},
                           out, dir.file("err"));
  ASSERT_EQ(rc, 0) << out << mk::test::read_file(dir.file("err"));
  auto paired = mk::vma::load_paired_state(state);
  EXPECT_NE(out.find(paired.vma_id), std::string::npos) << out;
  EXPECT_EQ(mk::test::file_mode(state + "/api.token"), 0600);
  // The same bundle again: its code is spent.
  rc = mk::run_capture({VMA_BIN, "pair", "--bundle", dir.file("bundle.json"), "--state-dir", dir.file("state2"),
                        "--name", "again", "--vcenter", "vc"},
                       out, dir.file("err2"));
  EXPECT_EQ(rc, 1);
  EXPECT_NE(mk::test::read_file(dir.file("err2")).find("already used"), std::string::npos);
  // Missing options: usage error.
  EXPECT_EQ(mk::run_capture({VMA_BIN, "pair", "--bundle", dir.file("bundle.json")}, out, dir.file("err3")), 2);
}

// A forged bundle: hosts that ssh or the NBD client could read as options or URI parts,
// ports out of range. `vma pair` refuses each before it writes anything or spends the
// code, and no command runs; the genuine bundle still pairs.
TEST(Pairing, TheVmaBinaryRefusesAHostileBundle) {
  TunnelLab lab;
  mk::test::TempDir dir("mk-vma-hostile");
  json genuine = lab.issue_bundle();
  std::string marker = dir.file("pwned");
  std::vector<std::pair<std::string, json>> forged = {
      {"ssh_host", "-oProxyCommand=touch " + marker}, {"ssh_host", "-oProxyCommand=x"}, {"ssh_host", "oma..example"},
      {"nbd_host", "-v"}, {"nbd_host", "oma/x?tls-psk-file=/etc/shadow"}, {"ssh_port", 0}, {"ssh_port", "22"},
      {"nbd_port", 65536}, {"nbd_port", -1}};
  int n = 0;
  for (const auto& [field, value] : forged) {
    SCOPED_TRACE(field + " = " + value.dump());
    json b = genuine;
    b[field] = value;
    std::string file = dir.file("bundle" + std::to_string(n) + ".json"), state = dir.file("state" + std::to_string(n));
    ++n;
    {
      std::ofstream f(file);
      f << b.dump();
    }
    std::string out, err = file + ".err";
    int rc = mk::run_capture({VMA_BIN, "pair", "--bundle", file, "--state-dir", state, "--name", "site-x", "--vcenter",
                              "vc.example"},
                             out, err);
    EXPECT_EQ(rc, 2) << mk::test::read_file(err);
    EXPECT_NE(mk::test::read_file(err).find(field), std::string::npos) << mk::test::read_file(err);
    EXPECT_FALSE(std::filesystem::exists(state));
  }
  EXPECT_FALSE(std::filesystem::exists(marker));
  {
    std::ofstream f(dir.file("genuine.json"));
    f << genuine.dump();
  }
  std::string out;
  EXPECT_EQ(mk::run_capture({VMA_BIN, "pair", "--bundle", dir.file("genuine.json"), "--state-dir", dir.file("state"),
                             "--name", "site-x", "--vcenter", "vc.example"},
                            out, dir.file("genuine.err")),
            0)
      << mk::test::read_file(dir.file("genuine.err"));
}
#endif

}  // namespace
}  // namespace mk::tunnel_test
