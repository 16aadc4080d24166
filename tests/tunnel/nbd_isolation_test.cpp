// NBD isolation between VMAs (issue 13, finding 3) on the OMA's one NBD port: the real
// migratekit-nbd-router in front of one real nbdkit per approved VMA, real libnbd
// clients with each paired VMA's own credentials, and the real migratekit binary
// copying. Every test runs in both NBD TLS modes: PSK (the router routes by the
// ClientHello's PSK identity, each nbdkit does TLS with its VMA's key) and X.509 (the
// router ends TLS, verifies the client certificate against the OMA's client CA and its
// revocation list, and routes by the certificate's CN to a plain nbdkit).
// A VMA's key lists and opens only the exports of the VMs assigned to it; unknown,
// pending and wrong keys get nothing; revoking a VMA ends its running copy within
// seconds while another VMA's copy goes on, and its bytes never reach another VMA's disk.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <libnbd.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

#include "common/endpoint.h"
#include "oma/exports/vma_isolated_exports.h"
#include "support/files.h"
#include "support/migratekit_runner.h"
#include "support/nbdkit_server.h"
#include "support/x509.h"
#include "tunnel_lab.h"

namespace mk::tunnel_test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kVmA = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00a1";
constexpr const char* kVmB = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00b1";
std::string export_of(const std::string& vm) { return "migration-vm-" + vm + "-disk0"; }

// Bytes the file system holds for `path` (a sparse target grows as a copy writes it).
uint64_t allocated_bytes(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_blocks) * 512 : 0;
}

struct NbdClose {
  void operator()(nbd_handle* h) const { nbd_close(h); }
};
using Nbd = std::unique_ptr<nbd_handle, NbdClose>;

// A libnbd handle for localhost:port (the name in the X.509 server certificate) with
// TLS required and `cred`: a PSK file (its first identity, as the copy engine uses it)
// or an X.509 certificates directory; in option mode when `list`.
Nbd connect(int port, const std::string& cred, const std::string& export_name, bool list, std::string& err) {
  Nbd h(nbd_create());
  nbd_set_tls(h.get(), LIBNBD_TLS_REQUIRE);
  if (std::filesystem::is_directory(cred)) {
    nbd_set_tls_certificates(h.get(), cred.c_str());
  } else {
    nbd_set_tls_psk_file(h.get(), cred.c_str());
    nbd_set_tls_username(h.get(), mk::first_psk_identity(cred).c_str());
  }
  nbd_set_export_name(h.get(), export_name.c_str());
  if (list) nbd_set_opt_mode(h.get(), true);
  if (nbd_connect_tcp(h.get(), "localhost", std::to_string(port).c_str()) == -1) {
    err = nbd_get_error() ? nbd_get_error() : "connect failed";
    return nullptr;
  }
  return h;
}

// "" when `export_name` opens with `psk_file`'s key, else libnbd's error.
std::string open_error(int port, const std::string& psk_file, const std::string& export_name) {
  std::string err;
  Nbd h = connect(port, psk_file, export_name, false, err);
  if (!h) return err.empty() ? "refused" : err;
  if (nbd_get_size(h.get()) < 0) return nbd_get_error();
  return "";
}

int collect(void* user, const char* name, const char*) {
  static_cast<std::vector<std::string>*>(user)->push_back(name);
  return 0;
}

// The exports `psk_file`'s key lists (NBD_OPT_LIST), or nullopt with `err` set.
std::optional<std::vector<std::string>> list_exports(int port, const std::string& psk_file, std::string& err) {
  Nbd h = connect(port, psk_file, "", true, err);
  if (!h) return std::nullopt;
  std::vector<std::string> names;
  if (nbd_opt_list(h.get(), nbd_list_callback{collect, &names, nullptr}) == -1) {
    err = nbd_get_error();
    return std::nullopt;
  }
  nbd_opt_abort(h.get());
  std::sort(names.begin(), names.end());
  return names;
}

enum class Mode { Psk, X509 };

struct NbdIsolation : ::testing::TestWithParam<Mode> {
  bool x509() const { return GetParam() == Mode::X509; }
  TunnelLab lab{x509()};
  mk::test::TempDir dir{"mk-nbd-isolation"};
  std::unique_ptr<Vma> a = lab.make_vma("site-a", true, false, false);
  std::unique_ptr<Vma> b = lab.make_vma("site-b", true, false, false);

  int port() { return lab.oma().export_server().port(); }
  std::string target(const std::string& vm) { return dir.file(vm + ".img"); }

  // The VM (one disk) assigned to `vma`, its export published on a fresh sparse file.
  void add_vm(const std::string& vm, const Vma& vma, uint64_t size) {
    json body = {{"vm_id", vm}, {"name", "vm"}, {"vcenter", "vc"}, {"datacenter", "dc"}, {"cpus", 1},
                 {"memory_mb", 512}, {"vma_id", vma.paired.vma_id},
                 {"disks", json::array({{{"key", "2000"}, {"unit", 0}, {"capacity_bytes", size}}})}};
    Reply r = http("POST", lab.api_port(), "/api/v1/vms", lab.admin(), body.dump());
    ASSERT_EQ(r.status, 201) << r.raw;
    mk::test::create_sparse_file(target(vm), size);
    lab.oma().export_server().publish(export_of(vm), target(vm));
  }
  // The OMA's own credentials (its export checks): its PSK file or its certificates directory.
  std::string oma_cred() {
    auto tls = lab.oma().export_server().endpoint(export_of(kVmA)).tls;
    return x509() ? tls.certificates_dir : tls.psk_file;
  }
  // A VMA's credentials: its PSK file, or its certificates directory (its key, the
  // certificate the OMA issued it, the OMA's server CA).
  std::string cred(const Vma& v) { return x509() ? v.paired.nbd_certificates_dir() : v.paired.psk_file(); }
  std::vector<std::string> copy_tls(const Vma& v) {
    return {x509() ? "--target-tls-certificates" : "--target-tls-psk", cred(v)};
  }
  // What the router logged since the last call (its refusals say why).
  std::string router_log() {
    std::string all = mk::test::read_file(lab.oma().config().data_dir + "/export-server.log");
    std::string fresh = all.substr(std::min(log_seen, all.size()));
    log_seen = all.size();
    return fresh;
  }
  size_t log_seen = 0;
};

std::string mode_name(const testing::TestParamInfo<Mode>& p) { return p.param == Mode::Psk ? "Psk" : "X509"; }

TEST_P(NbdIsolation, EachVmasKeyListsAndOpensOnlyItsOwnVmsExports) {
  add_vm(kVmA, *a, 4 << 20);
  add_vm(kVmB, *b, 4 << 20);
  std::string err;
  auto listed_a = list_exports(port(), cred(*a), err);
  ASSERT_TRUE(listed_a) << err;
  EXPECT_EQ(*listed_a, std::vector<std::string>{export_of(kVmA)});
  auto listed_b = list_exports(port(), cred(*b), err);
  ASSERT_TRUE(listed_b) << err;
  EXPECT_EQ(*listed_b, std::vector<std::string>{export_of(kVmB)});

  EXPECT_EQ(open_error(port(), cred(*a), export_of(kVmA)), "");
  EXPECT_EQ(open_error(port(), cred(*b), export_of(kVmB)), "");
  EXPECT_NE(open_error(port(), cred(*a), export_of(kVmB)), "") << "VMA a opened VMA b's disk";
  EXPECT_NE(open_error(port(), cred(*b), export_of(kVmA)), "") << "VMA b opened VMA a's disk";
  // The OMA's own key (its export checks, a default VMA) still reaches every export.
  auto listed_oma = list_exports(port(), oma_cred(), err);
  ASSERT_TRUE(listed_oma) << err;
  EXPECT_EQ(*listed_oma, (std::vector<std::string>{export_of(kVmA), export_of(kVmB)}));
  // An export published later for a VMA's VM is served to that VMA at once.
  const char* vm_a2 = "4210a4c2-6b57-4d4b-9d8e-0c1f2a3b00a2";
  add_vm(vm_a2, *a, 1 << 20);
  EXPECT_EQ(open_error(port(), cred(*a), export_of(vm_a2)), "");
  EXPECT_NE(open_error(port(), cred(*b), export_of(vm_a2)), "");
}

TEST_P(NbdIsolation, UnknownPendingAndWrongKeysAreRefused) {
  add_vm(kVmA, *a, 4 << 20);
  std::string err;
  if (!x509()) {
    // An identity no VMA has.
    std::string unknown = mk::test::make_psk_file(dir.file("unknown.keys"), "vma-00000000deadbeef");
    EXPECT_NE(open_error(port(), unknown, export_of(kVmA)), "");
    EXPECT_FALSE(list_exports(port(), unknown, err));
    // VMA a's identity with another key: its nbdkit refuses the TLS handshake.
    std::string forged = mk::test::make_psk_file(dir.file("forged.keys"), mk::first_psk_identity(cred(*a)));
    EXPECT_NE(open_error(port(), forged, export_of(kVmA)), "");
  } else {
    // A certificate of another CA naming VMA a (and trusting the OMA's server).
    fs::create_directories(dir.file("other-pki"));
    mk::test::make_x509_pki(dir.file("other-pki"), a->paired.vma_id);
    std::string other = mk::test::issue_x509_client(dir.file("other-pki"), dir.file("other"), a->paired.vma_id);
    fs::copy_file(lab.nbd_ca_cert_file(), other + "/ca-cert.pem", fs::copy_options::overwrite_existing);
    router_log();
    EXPECT_NE(open_error(port(), other, export_of(kVmA)), "");
    EXPECT_FALSE(list_exports(port(), other, err));
    EXPECT_NE(router_log().find("NBD router: closed the connection"), std::string::npos);
    // A certificate naming VMA a from the operator's CA, which the OMA trusts for its
    // server's certificate only: the operator's CA may sign any name, the router trusts
    // only the OMA's client CA for clients.
    std::string by_operator = mk::test::issue_x509_client(lab.nbd_pki_dir(), dir.file("by-operator"), a->paired.vma_id);
    EXPECT_NE(open_error(port(), by_operator, export_of(kVmA)), "") << "a certificate of the operator's CA got in";
    EXPECT_NE(router_log().find("NBD router: closed the connection"), std::string::npos);
    // VMA b's own certificate with VMA a's key: the name is the certificate's, and only
    // its key's holder can use it.
    std::string mixed = dir.file("mixed");
    fs::create_directories(mixed);
    fs::copy_file(cred(*b) + "/ca-cert.pem", mixed + "/ca-cert.pem");
    fs::copy_file(cred(*b) + "/client-cert.pem", mixed + "/client-cert.pem");
    fs::copy_file(cred(*a) + "/client-key.pem", mixed + "/client-key.pem");
    EXPECT_NE(open_error(port(), mixed, export_of(kVmA)), "");
    // No certificate at all.
    std::string none = dir.file("none");
    fs::create_directories(none);
    fs::copy_file(lab.nbd_ca_cert_file(), none + "/ca-cert.pem");
    EXPECT_NE(open_error(port(), none, export_of(kVmA)), "");
    EXPECT_NE(router_log().find("TLS handshake"), std::string::npos);
  }
  // A pending VMA has no server yet (with X.509, its certificate is also on the
  // revocation list); approved, it has one (serving none of a's VMs).
  auto c = lab.make_vma("site-c", /*approve=*/false, false, false);
  router_log();
  EXPECT_NE(open_error(port(), cred(*c), export_of(kVmA)), "");
  EXPECT_FALSE(list_exports(port(), cred(*c), err));
  EXPECT_NE(router_log().find("NBD router: closed the connection"), std::string::npos);
  lab.approve(c->paired.vma_id);
  auto listed = list_exports(port(), cred(*c), err);
  ASSERT_TRUE(listed) << err;
  EXPECT_TRUE(listed->empty());
  EXPECT_NE(open_error(port(), cred(*c), export_of(kVmA)), "");
  if (!x509()) {
    // The VMAs' keys are no longer in the OMA's own PSK file.
    std::string oma_keys = mk::test::read_file(oma_cred());
    EXPECT_EQ(oma_keys.find("vma-"), std::string::npos) << "the OMA's PSK file holds a VMA's key";
  }
}

TEST_P(NbdIsolation, RevocationEndsThatVmasCopyWithinSecondsAndNotAnotherVmas) {
  const uint64_t size_a = 256 << 20, size_b = 48 << 20;
  add_vm(kVmA, *a, size_a);
  add_vm(kVmB, *b, size_b);
  // Sources that take a while: random data, read at 8 MB/s (the rate filter counts bits).
  mk::test::NbdkitServer src_a({.plugin = "random", .args = {fmt::format("size={}", size_a), "seed=1", "rate=64M"},
                                .filters = {"rate"}, .read_only = true});
  mk::test::NbdkitServer src_b({.plugin = "random", .args = {fmt::format("size={}", size_b), "seed=2", "rate=64M"},
                                .filters = {"rate"}, .read_only = true});
  auto copy = [&](const Vma& vma, const std::string& src, const std::string& vm, const std::string& log) {
    std::vector<std::string> args = {"copy", src, fmt::format("nbds://localhost:{}/{}", port(), export_of(vm))};
    for (auto& t : copy_tls(vma)) args.push_back(t);
    args.push_back("--verify");
    return mk::test::start_migratekit(args, log, log);
  };
  Subprocess copy_a = copy(*a, src_a.uri(), kVmA, dir.file("copy-a.log"));
  Subprocess copy_b = copy(*b, src_b.uri(), kVmB, dir.file("copy-b.log"));
  // Both copies move bytes.
  auto allocated = [&](const std::string& vm) { return allocated_bytes(target(vm)) > (1 << 20); };
  ASSERT_TRUE(eventually([&] { return allocated(kVmA) && allocated(kVmB); }, std::chrono::seconds(60)))
      << mk::test::read_file(dir.file("copy-a.log")) << mk::test::read_file(dir.file("copy-b.log"));
  ASSERT_TRUE(copy_a.running() && copy_b.running());
  pid_t b_server = dynamic_cast<oma::VmaIsolatedExports&>(lab.oma().export_server()).vma_server_pid(b->paired.vma_id);

  auto revoked_at = std::chrono::steady_clock::now();
  Reply r = http("POST", lab.api_port(), "/api/v1/vmas/" + a->paired.vma_id + "/revoke", lab.admin());
  ASSERT_EQ(r.status, 200) << r.raw;
  // VMA a's copy fails (its connections end with its nbdkit; reconnecting is refused).
  ASSERT_TRUE(eventually([&] { return !copy_a.running(); }, std::chrono::seconds(30)))
      << "VMA a's copy still runs after its revocation";
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - revoked_at);
  EXPECT_NE(copy_a.wait(), 0) << mk::test::read_file(dir.file("copy-a.log"));
  std::cout << "VMA a's copy ended " << took.count() << " ms after its revocation\n";
  EXPECT_LT(took, std::chrono::seconds(15)) << "a revoked VMA's copy must end within seconds";
  uint64_t a_bytes = allocated_bytes(target(kVmA));
  // VMA b's copy goes on, on the same nbdkit, and its disk holds exactly its source.
  EXPECT_EQ(copy_b.wait(), 0) << mk::test::read_file(dir.file("copy-b.log"));
  EXPECT_EQ(dynamic_cast<oma::VmaIsolatedExports&>(lab.oma().export_server()).vma_server_pid(b->paired.vma_id),
            b_server);
  // (--verify compared b's target with b's source: none of a's bytes are on it.)
  // VMA a's key opens nothing any more, and its disk got nothing more.
  EXPECT_NE(open_error(port(), cred(*a), export_of(kVmA)), "");
  EXPECT_NE(open_error(port(), cred(*a), export_of(kVmB)), "");
  std::this_thread::sleep_for(std::chrono::seconds(1));
  EXPECT_EQ(allocated_bytes(target(kVmA)), a_bytes);
}

INSTANTIATE_TEST_SUITE_P(Modes, NbdIsolation, testing::Values(Mode::Psk, Mode::X509), mode_name);

}  // namespace
}  // namespace mk::tunnel_test
